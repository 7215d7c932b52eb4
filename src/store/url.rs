//! Destination URLs: `/path`, `s3://BUCKET/PREFIX`, `sftp://USER@HOST[:PORT]/PATH`, parsed
//! into what each store opens (pure; every bad URL a one-line error).

use super::check_path;

/// The kind of place a destination URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    /// An absolute directory.
    Dir(std::path::PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3 { bucket: String, prefix: String },
    /// `sftp://USER@HOST[:PORT]/PATH` (PATH absolute on the server).
    Sftp {
        user: String,
        host: String,
        port: u16,
        path: String,
    },
}

impl Url {
    /// Parses `/path`, `s3://bucket[/prefix]` or `sftp://user@host[:port]/path`.
    pub fn parse(text: &str) -> std::result::Result<Url, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(format!(
                    "{text:?}: the bucket name must be 3-63 of [a-z0-9.-], as in s3://my-bucket/sp"
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                check_path(&prefix).map_err(|e| e.to_string())?;
            }
            return Ok(Url::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(rest) = text.strip_prefix("sftp://") {
            return parse_sftp(text, rest);
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: use an absolute directory, s3://BUCKET/PREFIX or sftp://USER@HOST[:PORT]/PATH"
            ));
        }
        let p = std::path::PathBuf::from(text);
        if !p.is_absolute() {
            return Err(format!(
                "{text:?}: a directory destination must be an absolute path"
            ));
        }
        Ok(Url::Dir(p))
    }
}

/// `sftp://USER@HOST[:PORT]/PATH`, `rest` after the scheme.
fn parse_sftp(text: &str, rest: &str) -> std::result::Result<Url, String> {
    let usage = "as in sftp://backup@nas.example.org:2222/srv/sp/host1";
    let Some((authority, path)) = rest.find('/').map(|i| rest.split_at(i)) else {
        return Err(format!(
            "{text:?}: name the directory on the server, {usage}"
        ));
    };
    let Some((user, hostport)) = authority.rsplit_once('@') else {
        return Err(format!("{text:?}: name the user to log in as, {usage}"));
    };
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !user_ok {
        return Err(format!(
            "{text:?}: the user must be 1-64 of [A-Za-z0-9._-] (no password in the URL: sp logs in with key_file), {usage}"
        ));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(format!("{text:?}: an IPv6 host is written [ADDR], {usage}"));
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{text:?}: {h:?} is not an IPv6 address"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(format!(
                    "{text:?}: after [ADDR] comes :PORT or the path, {usage}"
                ))
            }
        };
        (h, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host_ok = hostport.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && !host.starts_with('-')
            && !host.starts_with('.')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !host_ok {
        return Err(format!(
            "{text:?}: {host:?} is not a host name or address, {usage}"
        ));
    }
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{text:?}: the port must be 1-65535, {usage}")),
        },
    };
    let trimmed = path.trim_end_matches('/');
    let path_ok = !trimmed.is_empty()
        && trimmed[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !trimmed
            .chars()
            .any(|c| c.is_control() || matches!(c, '\\' | '?' | '#' | '%'));
    if !path_ok {
        return Err(format!(
            "{text:?}: the path must be an absolute directory on the server other than / (no ., .., //, ?, #, %), {usage}"
        ));
    }
    Ok(Url::Sftp {
        user: user.to_string(),
        host: host.to_string(),
        port,
        path: trimmed.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Url::parse("s3://my-bucket/sp/host1/").unwrap(),
            Url::S3 {
                bucket: "my-bucket".into(),
                prefix: "sp/host1".into()
            }
        );
        assert_eq!(
            Url::parse("s3://my-bucket").unwrap(),
            Url::S3 {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(Url::parse("/mnt/usb").unwrap(), Url::Dir("/mnt/usb".into()));
        for bad in [
            "relative/dir",
            "s3://A_B/x",
            "s3://ok-bucket/../x",
            "ftp://h/x",
            "s3://b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sftp_urls() {
        assert_eq!(
            Url::parse("sftp://backup@nas.example.org:2222/srv/sp/host1/").unwrap(),
            Url::Sftp {
                user: "backup".into(),
                host: "nas.example.org".into(),
                port: 2222,
                path: "/srv/sp/host1".into()
            }
        );
        assert_eq!(
            Url::parse("sftp://root@127.0.0.1/tmp/x").unwrap(),
            Url::Sftp {
                user: "root".into(),
                host: "127.0.0.1".into(),
                port: 22,
                path: "/tmp/x".into()
            }
        );
        assert_eq!(
            Url::parse("sftp://u@[::1]:2200/b").unwrap(),
            Url::Sftp {
                user: "u".into(),
                host: "::1".into(),
                port: 2200,
                path: "/b".into()
            }
        );
        for bad in [
            "sftp://host/path",
            "sftp://@host/path",
            "sftp://u:secret@host/path",
            "sftp://u@host",
            "sftp://u@host/",
            "sftp://u@host:0/p",
            "sftp://u@host:99999/p",
            "sftp://u@host:/p",
            "sftp://u@host:22x/p",
            "sftp://u@/p",
            "sftp://u@-oProxyCommand=x/p",
            "sftp://-u@host/p",
            "sftp://u@host/a/../b",
            "sftp://u@host/a//b",
            "sftp://u@host/a/./b",
            "sftp://u@host/a?b",
            "sftp://u@host/a%2fb",
            "sftp://u@[nope]/p",
            "sftp://u@[::1/p",
            "sftp://u@[::1]x/p",
            "sftp://u@ho st/p",
        ] {
            let e = Url::parse(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
