//! What a site archive may hold. Archives are hostile input (the tenant wrote the files; anyone
//! who could write the backup directory wrote the bytes), so these rules decide which
//! members sp unpacks at all: refused are member paths with `..` or absolute paths, device
//! nodes, FIFOs, sockets and other special entries, hard links (sp never writes them; a
//! restore refuses all of them rather than judging where they lead), setuid/setgid bits,
//! symlinks where sp keeps its own files (`data`, `secrets`, `site.toml`, ...), and any
//! member below a symlink member. Symlinks themselves are data: whatever their target
//! (`/data/release-1.txt`, `../x`), they are restored as the links they were, and
//! [`super::stage`] never follows one while writing.
//!
//! [`scan_tar_zstd`] checks a whole archive (`sp verify`); [`super::stage`] applies the same
//! [`Guard`] to each member as it streams.

use std::io::{self, Read};
use std::path::{Component, Path};

use tar::EntryType;

/// Why an entry may not be unpacked, or Ok.
pub fn check_entry(
    path: &Path,
    kind: EntryType,
    link: Option<&Path>,
    mode: u32,
) -> Result<(), String> {
    let shown = path.display();
    let depth = relative_depth(path)
        .ok_or_else(|| format!("{shown}: absolute path or '..' in member name"))?;
    if depth == 0 && !matches!(kind, EntryType::Directory) {
        return Err(format!("{shown}: empty member name"));
    }
    if mode & 0o6000 != 0 {
        return Err(format!("{shown}: setuid/setgid bit (mode {mode:o})"));
    }
    match kind {
        EntryType::Regular | EntryType::Directory => Ok(()),
        EntryType::Symlink => match link {
            Some(t) if !t.as_os_str().is_empty() => Ok(()),
            _ => Err(format!("{shown}: symlink without a target")),
        },
        EntryType::Link => Err(format!(
            "{shown}: hard links are not allowed (sp never writes them)"
        )),
        EntryType::Char | EntryType::Block => Err(format!("{shown}: device nodes are not allowed")),
        EntryType::Fifo => Err(format!("{shown}: FIFOs are not allowed")),
        other => Err(format!(
            "{shown}: {other:?} entries are not allowed (only files, directories and symlinks)"
        )),
    }
}

/// Paths sp itself reads or mounts; a symlink there would redirect sp (or a bind mount).
const SP_PATHS: &[&str] = &[
    "data",
    "secrets",
    "secrets/db_password",
    "secrets/env",
    "tmp",
    "site.toml",
    "deploy.toml",
    "history.jsonl",
    "previous.log",
];

/// Checks a whole archive's members in order: each one alone ([`check_entry`]), and against
/// the symlinks before it — no member may sit below a symlink member (a chain of links that
/// each look harmless could otherwise lead out), and sp's own paths may not be links.
#[derive(Debug, Default)]
pub struct Guard {
    links: std::collections::HashSet<std::path::PathBuf>,
}

impl Guard {
    pub fn check(
        &mut self,
        path: &Path,
        kind: EntryType,
        link: Option<&Path>,
        mode: u32,
    ) -> Result<(), String> {
        check_entry(path, kind, link, mode)?;
        let clean: std::path::PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let mut prefix = std::path::PathBuf::new();
        let parts: Vec<_> = clean.components().collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            prefix.push(c);
            if self.links.contains(&prefix) {
                return Err(format!(
                    "{}: lies below the symlink {}",
                    path.display(),
                    prefix.display()
                ));
            }
        }
        if kind == EntryType::Symlink {
            if SP_PATHS.iter().any(|p| clean == Path::new(p)) {
                return Err(format!(
                    "{}: sp's own path may not be a symlink",
                    path.display()
                ));
            }
            self.links.insert(clean);
        }
        Ok(())
    }
}

/// Number of normal components when `path` is relative without `..`; None otherwise.
fn relative_depth(path: &Path) -> Option<usize> {
    let mut n = 0;
    for c in path.components() {
        match c {
            Component::Normal(_) => n += 1,
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(n)
}

/// Reads a whole tar+zstd stream and checks every entry; Err names the first unsafe one.
pub fn scan_tar_zstd<R: Read>(input: R) -> io::Result<Result<u64, String>> {
    let mut ar = tar::Archive::new(zstd::Decoder::new(input)?);
    let mut n = 0;
    let mut guard = Guard::default();
    for entry in ar.entries()? {
        let mut e = entry?;
        let path = e.path()?.into_owned();
        let link = e.link_name()?.map(|l| l.into_owned());
        let mode = e.header().mode()?;
        if let Err(why) = guard.check(&path, e.header().entry_type(), link.as_deref(), mode) {
            return Ok(Err(why));
        }
        io::copy(&mut e, &mut io::sink())?;
        n += 1;
    }
    let mut dec = ar.into_inner();
    io::copy(&mut dec, &mut io::sink())?;
    Ok(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_links_and_links_at_sp_paths_are_refused() {
        let mut g = Guard::default();
        assert!(g
            .check(Path::new("d"), EntryType::Directory, None, 0o755)
            .is_ok());
        assert!(g
            .check(
                Path::new("d/l"),
                EntryType::Symlink,
                Some(Path::new("..")),
                0o777
            )
            .is_ok());
        let err = g
            .check(
                Path::new("d/l/data"),
                EntryType::Symlink,
                Some(Path::new("../..")),
                0o777,
            )
            .unwrap_err();
        assert!(err.contains("below the symlink"), "{err}");
        assert!(g
            .check(Path::new("d/l/x.txt"), EntryType::Regular, None, 0o644)
            .is_err());
        let mut g = Guard::default();
        assert!(g
            .check(
                Path::new("data"),
                EntryType::Symlink,
                Some(Path::new("secrets")),
                0o777
            )
            .is_err());
        assert!(g
            .check(
                Path::new("data/ok"),
                EntryType::Symlink,
                Some(Path::new("file")),
                0o777
            )
            .is_ok());
    }

    #[test]
    fn entries_are_checked() {
        let ok = |p: &str, k: EntryType, l: Option<&str>, m: u32| {
            check_entry(Path::new(p), k, l.map(Path::new), m)
        };
        assert!(ok("data/a.txt", EntryType::Regular, None, 0o644).is_ok());
        assert!(ok("data", EntryType::Directory, None, 0o750).is_ok());
        assert!(ok("data/link", EntryType::Symlink, Some("a.txt"), 0o777).is_ok());
        assert!(ok("data/sub/link", EntryType::Symlink, Some("../a.txt"), 0o777).is_ok());
        assert!(ok("data/link", EntryType::Symlink, Some("../site.toml"), 0o777).is_ok());
        // Link targets are data, whatever they say.
        assert!(ok(
            "data/link",
            EntryType::Symlink,
            Some("../../etc/passwd"),
            0o777
        )
        .is_ok());
        assert!(ok("link", EntryType::Symlink, Some("../x"), 0o777).is_ok());
        assert!(ok("data/link", EntryType::Symlink, Some("/etc/passwd"), 0o777).is_ok());
        assert!(ok("data/link", EntryType::Symlink, Some(""), 0o777).is_err());
        assert!(ok("../evil", EntryType::Regular, None, 0o644).is_err());
        assert!(ok("/etc/cron.d/x", EntryType::Regular, None, 0o644).is_err());
        assert!(ok("data/../../x", EntryType::Regular, None, 0o644).is_err());
        assert!(ok("data/dev", EntryType::Char, None, 0o644).is_err());
        assert!(ok("data/fifo", EntryType::Fifo, None, 0o644).is_err());
        assert!(ok("data/suid", EntryType::Regular, None, 0o4755).is_err());
        assert!(ok("data/sgid", EntryType::Directory, None, 0o2755).is_err());
        assert!(ok("data/hard", EntryType::Link, Some("data/a.txt"), 0o644).is_err());
        assert!(ok("data/hard", EntryType::Link, Some("/etc/shadow"), 0o644).is_err());
    }
}
