//! Crontab schedules: parsing standard 5-field expressions (Sunday = 0 or 7) with croner, the
//! next run times, and the system cron file / systemd units that `sp schedule install` writes.

use std::path::Path;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Parses a standard 5-field crontab expression (minute hour day-of-month month day-of-week).
pub fn parse(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{expr:?}: a crontab schedule has 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?}: {e}"))
}

/// The next `n` run times strictly after `after`.
pub fn next_runs<Tz: TimeZone>(
    expr: &str,
    after: &DateTime<Tz>,
    n: usize,
) -> Result<Vec<DateTime<Tz>>, String> {
    let cron = parse(expr)?;
    let mut out = Vec::with_capacity(n);
    let mut t = after.clone();
    for _ in 0..n {
        t = cron
            .find_next_occurrence(&t, false)
            .map_err(|e| format!("{expr:?}: {e}"))?;
        out.push(t.clone());
    }
    Ok(out)
}

/// One line of the system cron file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub comment: String,
    pub schedule: String,
    /// A /bin/sh command line (words already quoted with [`shell_quote`]).
    pub command: String,
}

/// Quotes one word for /bin/sh.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `/etc/cron.d/simple-paas`: runs as root with the given config; `%` is escaped for cron.
pub fn cron_file(config: &Path, entries: &[Entry]) -> String {
    let mut out = String::from(
        "# Written by `sp schedule install`; rewrite it with that command rather than by hand.\n\
         SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
    );
    out.push_str(&format!(
        "SP_CONFIG={}\n\n",
        shell_quote(&config.display().to_string())
    ));
    for e in entries {
        out.push_str(&format!(
            "# {}\n{} root {}\n",
            e.comment,
            e.schedule,
            e.command.replace('%', "\\%")
        ));
    }
    out
}

/// Converts a 5-field crontab expression to a systemd OnCalendar= value where it is simple
/// (numbers, `*`, lists); None when it uses steps or ranges systemd spells differently.
pub fn on_calendar(expr: &str) -> Option<String> {
    let f: Vec<&str> = expr.split_whitespace().collect();
    if f.len() != 5 || f.iter().any(|x| x.contains('/') || x.contains('-')) {
        return None;
    }
    let (min, hour, dom, mon, dow) = (f[0], f[1], f[2], f[3], f[4]);
    let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let dow = if dow == "*" {
        String::new()
    } else {
        let days: Option<Vec<&str>> = dow
            .split(',')
            .map(|d| d.parse::<usize>().ok().and_then(|i| names.get(i).copied()))
            .collect();
        format!("{} ", days?.join(","))
    };
    Some(format!("{dow}*-{mon}-{dom} {hour}:{min}:00"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn known_next_runs() {
        // 2026-11-21 is a Saturday.
        let from = at("2026-11-21T10:30:00Z");
        let table = [
            ("17 * * * *", "2026-11-21T11:17:00+00:00"),
            ("0 3 * * *", "2026-11-22T03:00:00+00:00"),
            ("0 4 * * 0", "2026-11-22T04:00:00+00:00"), // Sunday as 0
            ("0 4 * * 7", "2026-11-22T04:00:00+00:00"), // Sunday as 7
            ("0 4 * * 1", "2026-11-23T04:00:00+00:00"), // Monday
            ("30 2 1 * *", "2026-12-01T02:30:00+00:00"),
            ("*/15 * * * *", "2026-11-21T10:45:00+00:00"),
            ("0 0 1 1 *", "2027-01-01T00:00:00+00:00"),
            ("0 12 * * 1-5", "2026-11-23T12:00:00+00:00"),
            ("0 9 13 * 5", "2026-11-27T09:00:00+00:00"), // POSIX: day-of-month OR day-of-week
        ];
        for (expr, want) in table {
            let got = next_runs(expr, &from, 1).unwrap()[0].to_rfc3339();
            assert_eq!(got, want, "{expr}");
        }
        let three = next_runs("17 * * * *", &from, 3).unwrap();
        assert_eq!(three[2].to_rfc3339(), "2026-11-21T13:17:00+00:00");
    }

    #[test]
    fn rejects_non_crontab_syntax() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "* 24 * * *",
            "* * * * 8",
            "nonsense",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_file_quotes_and_escapes() {
        let e = Entry {
            comment: "backup".into(),
            schedule: "17 * * * *".into(),
            command: ["/usr/local/bin/sp", "-q", "site", "it's 100%"]
                .map(shell_quote)
                .join(" "),
        };
        let text = cron_file(Path::new("/etc/simple-paas/config.toml"), &[e]);
        assert!(text.contains("SP_CONFIG=/etc/simple-paas/config.toml\n"));
        assert!(
            text.contains("17 * * * * root /usr/local/bin/sp -q site 'it'\\''s 100\\%'\n"),
            "{text}"
        );
    }

    #[test]
    fn systemd_calendar() {
        assert_eq!(on_calendar("17 3 * * *").as_deref(), Some("*-*-* 3:17:00"));
        assert_eq!(
            on_calendar("0 4 * * 0").as_deref(),
            Some("Sun *-*-* 4:0:00")
        );
        assert_eq!(on_calendar("*/5 * * * *"), None);
    }
}
