//! Crontab schedules: parsing standard 5-field expressions (Sunday = 0 or 7) with croner, the
//! next run times, and the system cron file / systemd units that `sp schedule install` writes.

use std::path::Path;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Where `sp schedule install` writes the cron file unless told otherwise.
pub const DEFAULT_CRON_FILE: &str = "/etc/cron.d/simple-paas";
/// Where `sp schedule install --systemd` writes its units unless told otherwise.
pub const DEFAULT_SYSTEMD_DIR: &str = "/etc/systemd/system";

/// Parses a standard 5-field crontab expression (minute hour day-of-month month day-of-week)
/// and refuses one that can never fire (`0 0 31 2 *`: there is no 31 February).
pub fn parse(expr: &str) -> Result<Cron, String> {
    let cron = parse_syntax(expr)?;
    // Every date pattern recurs within 8 years (leap years included), so a schedule with no
    // next run from now has none ever.
    let now = chrono::Utc::now();
    match cron.find_next_occurrence(&now, false) {
        Ok(t) if t - now < chrono::Duration::days(8 * 366) => Ok(cron),
        _ => Err(format!(
            "{expr:?} never fires: no date matches its day-of-month and month (e.g. 31 February)"
        )),
    }
}

fn parse_syntax(expr: &str) -> Result<Cron, String> {
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

/// One scheduled thing as the systemd units see it.
#[derive(Debug, Clone)]
pub struct Timer {
    /// `backup`, `drill` or `SITE/JOB`.
    pub name: String,
    pub schedule: String,
    /// A /bin/sh command line.
    pub command: String,
}

/// The unit files (file name, text) for `jobs` in `--systemd` mode: a `.service` and a
/// `.timer` per job, and `simple-paas-boot.service`, which runs `boot_command` (the firewall
/// after a reboot). Err names the job whose schedule systemd cannot spell.
pub fn systemd_units(
    config: &Path,
    jobs: &[Timer],
    boot_command: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let service = |desc: &str, cmd: &str, install: &str| {
        format!(
            "[Unit]\nDescription=sp: {desc}\nWants=network-online.target docker.service mariadb.service\nAfter=network-online.target docker.service mariadb.service\n\n[Service]\nType=oneshot\nEnvironment=SP_CONFIG={config}\nExecStart=/bin/sh -c {cmd}\n{install}",
            config = config.display(),
            cmd = shell_quote(cmd)
        )
    };
    for j in jobs {
        let unit = format!("simple-paas-{}", j.name.replace('/', "-"));
        let cal = on_calendar(&j.schedule).ok_or_else(|| {
            format!(
                "{}: {:?} has steps or ranges systemd spells differently; use the cron file (no --systemd)",
                j.name, j.schedule
            )
        })?;
        out.push((format!("{unit}.service"), service(&j.name, &j.command, "")));
        out.push((
            format!("{unit}.timer"),
            format!(
                "[Unit]\nDescription=sp: {name} on schedule\n\n[Timer]\nOnCalendar={cal}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
                name = j.name
            ),
        ));
    }
    out.push((
        "simple-paas-boot.service".into(),
        service(
            "after a reboot: the sites' firewall table",
            boot_command,
            "\n[Install]\nWantedBy=multi-user.target\n",
        ),
    ));
    Ok(out)
}

/// Which kind of schedule `sp schedule install` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cron,
    Systemd,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Cron => "cron",
            Kind::Systemd => "systemd",
        })
    }
}

/// What the last `sp schedule install` wrote (`state_dir/schedule.json`), so `sp status`
/// can check those files and the next install can remove what it no longer writes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    pub kind: Kind,
    /// The cron file, or the systemd directory.
    pub location: std::path::PathBuf,
    pub files: Vec<std::path::PathBuf>,
}

impl Installed {
    pub fn path(state_dir: &Path) -> std::path::PathBuf {
        state_dir.join("schedule.json")
    }

    /// The record, or None when there is none (never installed, or an older sp).
    pub fn load(state_dir: &Path) -> crate::Result<Option<Installed>> {
        let p = Self::path(state_dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                crate::Error::Other(format!(
                    "{}: {e}; run `sp schedule install` again to rewrite it",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::Error::io_path("read", &p, e)),
        }
    }

    pub fn save(&self, state_dir: &Path) -> crate::Result<()> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| crate::Error::Other(format!("encode the schedule record: {e}")))?;
        crate::fsutil::write_atomic(&Self::path(state_dir), &text, 0o600)
    }
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
    fn refuses_a_schedule_that_never_fires() {
        for never in ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            let e = parse(never).unwrap_err();
            assert!(e.contains("never fires"), "{never}: {e}");
        }
        // Leap day comes at most every 8 years; it fires.
        assert!(parse("0 0 29 2 *").is_ok());
        assert!(parse("0 0 31 1,2 *").is_ok());
    }

    #[test]
    fn systemd_units_one_pair_per_job_and_a_boot_service() {
        let jobs = [Timer {
            name: "blog/clean".into(),
            schedule: "17 3 * * *".into(),
            command: "/usr/bin/sp -q site job blog clean".into(),
        }];
        let units = systemd_units(
            Path::new("/etc/simple-paas/config.toml"),
            &jobs,
            "/usr/bin/sp -q apply",
        )
        .unwrap();
        let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "simple-paas-blog-clean.service",
                "simple-paas-blog-clean.timer",
                "simple-paas-boot.service"
            ]
        );
        assert!(units[0]
            .1
            .contains("ExecStart=/bin/sh -c '/usr/bin/sp -q site job blog clean'\n"));
        assert!(units[1].1.contains("OnCalendar=*-*-* 3:17:00\n"));
        assert!(units[2].1.contains("WantedBy=multi-user.target"));
        assert!(units[2]
            .1
            .contains("Environment=SP_CONFIG=/etc/simple-paas/config.toml\n"));
        let steps = [Timer {
            schedule: "*/5 * * * *".into(),
            ..jobs[0].clone()
        }];
        let e = systemd_units(Path::new("/c"), &steps, "x").unwrap_err();
        assert!(e.starts_with("blog/clean: "), "{e}");
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
