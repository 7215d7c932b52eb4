//! Loading one dump over several connections: a mysqldump/mariadb-dump file is a preamble,
//! then one section per table (structure, data, triggers), then a tail (final view
//! definitions, routines, events, restoring session settings). Table sections are
//! independent, so each connection replays the preamble and its share of the sections; the
//! tail runs last, once every table is in. Every connection reads the (zstd) file itself and
//! skips what is not its own, so nothing is buffered in memory.

use std::io::{self, BufRead, Write};

/// Where a line of a dump belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Preamble,
    /// The n-th table (or temporary view) section.
    Section(usize),
    Tail,
}

/// Walks a dump's lines, telling which part each belongs to.
#[derive(Debug, Default)]
pub struct Splitter {
    sections: usize,
    in_tail: bool,
}

const SECTION_STARTS: &[&[u8]] = &[
    b"-- Table structure for table ",
    b"-- Temporary table structure for view ",
    b"-- Temporary view structure for view ",
];
const TAIL_STARTS: &[&[u8]] = &[
    b"-- Final view structure for view ",
    b"-- Dumping events for database ",
    b"-- Dumping routines for database ",
    b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */",
];

impl Splitter {
    pub fn part(&mut self, line: &[u8]) -> Part {
        if !self.in_tail {
            if TAIL_STARTS.iter().any(|p| line.starts_with(p)) {
                self.in_tail = true;
            } else if SECTION_STARTS.iter().any(|p| line.starts_with(p)) {
                self.sections += 1;
            }
        }
        match (self.in_tail, self.sections) {
            (true, _) => Part::Tail,
            (false, 0) => Part::Preamble,
            (false, n) => Part::Section(n - 1),
        }
    }
}

/// Byte size of every table section (one pass over the dump).
pub fn section_sizes(input: &mut dyn BufRead) -> io::Result<Vec<u64>> {
    let mut sizes = Vec::new();
    let mut s = Splitter::default();
    let mut line = Vec::new();
    while read_line(input, &mut line)? {
        if let Part::Section(i) = s.part(&line) {
            if sizes.len() <= i {
                sizes.resize(i + 1, 0);
            }
            sizes[i] += line.len() as u64;
        }
    }
    Ok(sizes)
}

/// Gives each section to a worker, biggest first onto the least loaded (sizes → worker index).
pub fn assign(sizes: &[u64], workers: usize) -> Vec<usize> {
    let workers = workers.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut load = vec![0u64; workers];
    let mut owner = vec![0; sizes.len()];
    for i in order {
        let w = (0..workers).min_by_key(|&w| load[w]).unwrap_or(0);
        load[w] += sizes[i];
        owner[i] = w;
    }
    owner
}

/// Copies the lines `keep` selects from `input` to `out`.
pub fn filter(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    keep: &dyn Fn(Part) -> bool,
    definer: Option<&Definer>,
) -> io::Result<()> {
    let mut s = Splitter::default();
    let mut line = Vec::new();
    while read_line(input, &mut line)? {
        if keep(s.part(&line)) {
            match definer {
                Some(d) if !line.starts_with(b"INSERT INTO ") => out.write_all(&d.apply(&line))?,
                _ => out.write_all(&line)?,
            }
        }
    }
    Ok(())
}

/// Renames the definer of views, triggers, routines and events (`DEFINER=`old`@…`) when a
/// dump is loaded under another name (a clone, a drill): the old user has no rights there.
#[derive(Debug, Clone)]
pub struct Definer {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Definer {
    pub fn new(old_user: &str, new_user: &str) -> Definer {
        Definer {
            from: format!("DEFINER=`{}`@", old_user.replace('`', "``")).into_bytes(),
            to: format!("DEFINER=`{}`@", new_user.replace('`', "``")).into_bytes(),
        }
    }

    fn apply(&self, line: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            if line[i..].starts_with(&self.from) {
                out.extend_from_slice(&self.to);
                i += self.from.len();
            } else {
                out.push(line[i]);
                i += 1;
            }
        }
        out
    }
}

fn read_line(input: &mut dyn BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    Ok(input.read_until(b'\n', line)? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n\n--\n-- Table structure for table `a`\n--\nCREATE TABLE `a` (id int);\n--\n-- Dumping data for table `a`\n--\nINSERT INTO `a` VALUES (1),(2);\n--\n-- Temporary table structure for view `v`\n--\nCREATE TABLE `v` (id int);\n--\n-- Table structure for table `b`\n--\nCREATE TABLE `b` (id int);\nINSERT INTO `b` VALUES (3);\nDELIMITER ;;\nCREATE TRIGGER t AFTER INSERT ON b FOR EACH ROW INSERT INTO a VALUES (NEW.id) ;;\nDELIMITER ;\n--\n-- Final view structure for view `v`\n--\nDROP TABLE IF EXISTS `v`;\nCREATE VIEW `v` AS select 1;\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed on 2026-11-21 10:00:00\n";

    fn parts() -> Vec<(Part, String)> {
        let mut s = Splitter::default();
        DUMP.lines()
            .map(|l| (s.part(l.as_bytes()), l.to_string()))
            .collect()
    }

    #[test]
    fn splits_preamble_sections_and_tail() {
        let p = parts();
        let of = |needle: &str| {
            p.iter()
                .find(|(_, l)| l.contains(needle))
                .map(|(x, _)| *x)
                .unwrap()
        };
        assert_eq!(of("SET NAMES"), Part::Preamble);
        assert_eq!(of("sandbox"), Part::Preamble);
        assert_eq!(of("CREATE TABLE `a`"), Part::Section(0));
        assert_eq!(of("VALUES (1),(2)"), Part::Section(0));
        assert_eq!(of("CREATE TABLE `v`"), Part::Section(1));
        assert_eq!(of("CREATE TABLE `b`"), Part::Section(2));
        assert_eq!(of("CREATE TRIGGER"), Part::Section(2));
        assert_eq!(of("CREATE VIEW"), Part::Tail);
        assert_eq!(of("Dump completed"), Part::Tail);
    }

    #[test]
    fn every_line_goes_somewhere_exactly_once() {
        let sizes = section_sizes(&mut DUMP.as_bytes()).unwrap();
        assert_eq!(sizes.len(), 3);
        let owner = assign(&sizes, 2);
        let mut pieces = Vec::new();
        for w in 0..2 {
            let mut out = Vec::new();
            filter(
                &mut DUMP.as_bytes(),
                &mut out,
                &|p| matches!(p, Part::Section(i) if owner[i] == w),
                None,
            )
            .unwrap();
            pieces.push(String::from_utf8(out).unwrap());
        }
        let mut pre = Vec::new();
        filter(
            &mut DUMP.as_bytes(),
            &mut pre,
            &|p| p == Part::Preamble,
            None,
        )
        .unwrap();
        let mut tail = Vec::new();
        filter(&mut DUMP.as_bytes(), &mut tail, &|p| p == Part::Tail, None).unwrap();
        let total = pre.len() + tail.len() + pieces.iter().map(String::len).sum::<usize>();
        assert_eq!(total, DUMP.len());
        assert!(
            pieces.iter().all(|p| !p.is_empty()),
            "both workers get work: {pieces:?}"
        );
    }

    #[test]
    fn definers_are_renamed_outside_data() {
        let d = Definer::new("blog", "blogcopy");
        let text = "/*!50013 DEFINER=`blog`@`%` SQL SECURITY DEFINER */\nINSERT INTO `t` VALUES ('DEFINER=`blog`@');\n";
        let mut out = Vec::new();
        filter(&mut text.as_bytes(), &mut out, &|_| true, Some(&d)).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("/*!50013 DEFINER=`blogcopy`@`%`"), "{out}");
        assert!(
            out.contains("VALUES ('DEFINER=`blog`@')"),
            "data must stay as it was: {out}"
        );
    }

    #[test]
    fn assignment_balances_by_size() {
        assert_eq!(assign(&[100, 10, 10, 90], 2), vec![0, 1, 0, 1]);
        assert_eq!(assign(&[5], 3), vec![0]);
    }
}
