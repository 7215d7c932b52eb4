//! Reading a mysqldump/mariadb-dump file once, as the statements that load it: the
//! preamble's **session** settings, each table's **schema** (run in order on one connection),
//! the **rows** (one `INSERT` statement each, the bulk of any dump, which any connection may
//! run in any order once its table exists), and the text that must come **after the rows** —
//! each table's triggers, the final views, routines and events — which goes to the server's
//! own client, as it may hold anything a dump can (`DELIMITER`, client commands).
//!
//! The dump is read line by line; nothing is held in memory but the statement at hand and the
//! after-rows text (definitions, not data).

use std::io::{self, BufRead};

/// What one line of a dump is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Before the first table: session settings every connection replays.
    Preamble,
    /// Table (or stand-in view) structure, before its rows.
    Schema,
    /// A line of an `INSERT` statement; `last` when it ends the statement.
    Row { last: bool },
    /// After the rows: triggers, final views, routines, events, restoring settings.
    AfterRows,
    /// `LOCK TABLES`/`UNLOCK TABLES`: left out (rows load over other connections).
    Lock,
}

/// Walks a dump's lines in order, telling what each is.
#[derive(Debug, Default)]
pub struct Classifier {
    in_sections: bool,
    in_tail: bool,
    /// Inside `DELIMITER ;;` … `DELIMITER ;` (trigger and routine bodies).
    in_block: bool,
    in_insert: bool,
    /// The current table section is past its structure.
    rows_seen: bool,
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

impl Classifier {
    pub fn kind(&mut self, line: &[u8]) -> Kind {
        if self.in_insert {
            self.in_insert = !line.trim_ascii_end().ends_with(b";");
            return Kind::Row {
                last: !self.in_insert,
            };
        }
        if line.starts_with(b"DELIMITER ") {
            self.in_block = line[10..].trim_ascii_end() != b";";
            // Trigger and routine bodies are for the client, after the rows.
            self.rows_seen |= self.in_sections;
        } else if !self.in_tail && !self.in_block {
            if TAIL_STARTS.iter().any(|p| line.starts_with(p)) {
                self.in_tail = true;
            } else if SECTION_STARTS.iter().any(|p| line.starts_with(p)) {
                self.in_sections = true;
                self.rows_seen = false;
            } else if self.in_sections && line.starts_with(b"-- Dumping data for table ") {
                self.rows_seen = true;
            } else if self.in_sections && line.starts_with(b"INSERT INTO `") {
                self.rows_seen = true;
                self.in_insert = !line.trim_ascii_end().ends_with(b";");
                return Kind::Row {
                    last: !self.in_insert,
                };
            } else if self.in_sections
                && (line.starts_with(b"LOCK TABLES `")
                    || line.trim_ascii_end() == b"UNLOCK TABLES;")
            {
                return Kind::Lock;
            }
        }
        if self.in_tail || self.rows_seen {
            Kind::AfterRows
        } else if self.in_sections {
            Kind::Schema
        } else {
            Kind::Preamble
        }
    }
}

/// A statement for a loading connection, in dump order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A preamble setting (`SET NAMES`, `TIME_ZONE`, `SQL_MODE`, checks off…) every
    /// connection runs first; settings of the server itself (`@@GLOBAL`) are left to the client.
    Session(Vec<u8>),
    /// A table's structure: runs before any later piece.
    Schema(Vec<u8>),
    /// One `INSERT`: runs once the schema before it has.
    Rows(Vec<u8>),
}

/// Reads a dump once, calling `each` with its pieces in order (see [`Piece`]); returns the
/// text for the client to run after every row is in: the preamble, then what comes after
/// the rows. `definer` renames definers everywhere but in rows. A dump that ends inside a
/// statement or without its completion trailer (cut short) is an `UnexpectedEof` error,
/// raised before the caller runs anything after the rows.
pub fn pieces(
    input: &mut dyn BufRead,
    definer: Option<&Definer>,
    each: &mut dyn FnMut(Piece) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let mut c = Classifier::default();
    let mut line = Vec::new();
    let mut after = Vec::new();
    let mut stmt = Vec::new();
    let mut complete = false;
    let rename = |line: &[u8]| match definer {
        Some(d) => d.apply(line),
        None => line.to_vec(),
    };
    while read_line(input, &mut line)? {
        let kind = c.kind(&line);
        let text = line.trim_ascii_end();
        if !text.is_empty() {
            complete = !matches!(kind, Kind::Row { .. })
                && crate::snapshot::archive::has_dump_trailer(text);
        }
        match kind {
            Kind::Preamble => {
                after.extend_from_slice(&line);
                // One statement a line; comments and client commands (MariaDB's sandbox
                // line, which has no `;`) are skipped.
                if text.ends_with(b";")
                    && !text.starts_with(b"--")
                    && !text.starts_with(b"DELIMITER")
                    && !contains(text, b"@@GLOBAL")
                {
                    each(Piece::Session(text.to_vec()))?;
                }
            }
            Kind::Schema => {
                if stmt.is_empty() && (text.is_empty() || text.starts_with(b"--")) {
                    continue;
                }
                stmt.extend_from_slice(&line);
                if text.ends_with(b";") {
                    let end = stmt.trim_ascii_end().len();
                    each(Piece::Schema(rename(&stmt[..end])))?;
                    stmt.clear();
                }
            }
            Kind::Row { last } => {
                stmt.extend_from_slice(&line);
                if last {
                    let end = stmt.trim_ascii_end().len();
                    stmt.truncate(end);
                    each(Piece::Rows(std::mem::take(&mut stmt)))?;
                }
            }
            Kind::AfterRows => after.extend_from_slice(&rename(&line)),
            Kind::Lock => {}
        }
    }
    if !stmt.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the dump ends inside a statement",
        ));
    }
    if !complete {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the dump ends without its completion trailer (cut short?)",
        ));
    }
    Ok(after)
}

/// The table an `INSERT INTO `name` …` statement fills, for messages.
pub fn insert_table(stmt: &[u8]) -> String {
    let rest = stmt.strip_prefix(b"INSERT INTO `").unwrap_or(stmt);
    let end = rest.iter().position(|&b| b == b'`').unwrap_or(0);
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n/*!40014 SET @@GLOBAL.X=1 */;\n\n--\n-- Table structure for table `a`\n--\nCREATE TABLE `a` (id int);\n--\n-- Dumping data for table `a`\n--\nLOCK TABLES `a` WRITE;\nINSERT INTO `a` VALUES\n(1,'x;'),\n(2,'INSERT INTO `b`');\nINSERT INTO `a` VALUES (3,'y');\nUNLOCK TABLES;\n--\n-- Temporary table structure for view `v`\n--\nCREATE TABLE `v` (id int);\n--\n-- Table structure for table `b`\n--\nCREATE TABLE `b` (id int);\nDELIMITER ;;\nCREATE PROCEDURE-ish body\nINSERT INTO `a` VALUES (9);\nEND ;;\nDELIMITER ;\nINSERT INTO `b` VALUES (3);\nDELIMITER ;;\nCREATE TRIGGER t AFTER INSERT ON b FOR EACH ROW\nINSERT INTO `a` VALUES (NEW.id) ;;\nDELIMITER ;\n--\n-- Final view structure for view `v`\n--\nDROP TABLE IF EXISTS `v`;\nCREATE VIEW `v` AS select 1;\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed on 2026-11-21 10:00:00\n";

    fn kinds() -> Vec<(Kind, String)> {
        let mut c = Classifier::default();
        DUMP.lines()
            .map(|l| (c.kind(format!("{l}\n").as_bytes()), l.to_string()))
            .collect()
    }

    fn kind_of(needle: &str) -> Kind {
        kinds()
            .into_iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(k, _)| k)
            .unwrap()
    }

    #[test]
    fn tells_schema_rows_and_what_comes_after() {
        assert_eq!(kind_of("SET NAMES"), Kind::Preamble);
        assert_eq!(kind_of("sandbox"), Kind::Preamble);
        assert_eq!(kind_of("CREATE TABLE `a`"), Kind::Schema);
        assert_eq!(kind_of("LOCK TABLES `a`"), Kind::Lock);
        assert_eq!(kind_of("UNLOCK TABLES"), Kind::Lock);
        assert_eq!(kind_of("INSERT INTO `a` VALUES"), Kind::Row { last: false });
        assert_eq!(kind_of("(1,'x;'),"), Kind::Row { last: false });
        assert_eq!(kind_of("(2,'INSERT"), Kind::Row { last: true });
        assert_eq!(kind_of("VALUES (3,'y')"), Kind::Row { last: true });
        assert_eq!(kind_of("CREATE TABLE `v`"), Kind::Schema);
        assert_eq!(kind_of("CREATE TABLE `b`"), Kind::Schema);
        // An INSERT inside a routine or trigger body is never a row; such bodies come after.
        assert_eq!(kind_of("INSERT INTO `a` VALUES (9)"), Kind::AfterRows);
        assert_eq!(kind_of("-- Dumping data for table `a`"), Kind::AfterRows);
        assert_eq!(kind_of("VALUES (NEW.id)"), Kind::AfterRows);
        assert_eq!(kind_of("CREATE TRIGGER"), Kind::AfterRows);
        assert_eq!(kind_of("CREATE VIEW"), Kind::AfterRows);
        assert_eq!(kind_of("Dump completed"), Kind::AfterRows);
    }

    fn read(text: &str, definer: Option<&Definer>) -> (Vec<Piece>, String) {
        let mut pieces_seen = Vec::new();
        let after = pieces(&mut text.as_bytes(), definer, &mut |p| {
            pieces_seen.push(p);
            Ok(())
        })
        .unwrap();
        (pieces_seen, String::from_utf8(after).unwrap())
    }

    fn text(p: &Piece) -> String {
        let (Piece::Session(b) | Piece::Schema(b) | Piece::Rows(b)) = p;
        String::from_utf8(b.clone()).unwrap()
    }

    #[test]
    fn a_dump_reads_as_ordered_statements_and_the_client_text() {
        let (pieces, after) = read(DUMP, None);
        let shown: Vec<String> = pieces
            .iter()
            .map(|p| {
                let kind = match p {
                    Piece::Session(_) => "session",
                    Piece::Schema(_) => "schema",
                    Piece::Rows(_) => "rows",
                };
                format!("{kind}: {}", text(p))
            })
            .collect();
        assert_eq!(
            shown,
            [
                "session: /*!40101 SET NAMES utf8mb4 */;",
                "session: /*!40103 SET TIME_ZONE='+00:00' */;",
                "schema: CREATE TABLE `a` (id int);",
                "rows: INSERT INTO `a` VALUES\n(1,'x;'),\n(2,'INSERT INTO `b`');",
                "rows: INSERT INTO `a` VALUES (3,'y');",
                "schema: CREATE TABLE `v` (id int);",
                "schema: CREATE TABLE `b` (id int);",
                "rows: INSERT INTO `b` VALUES (3);",
            ]
        );
        // The client gets the preamble (sandbox line included) and everything after the rows,
        // the routine-like block too, but no row and no table lock.
        assert!(
            after.starts_with("/*M!999999\\- enable the sandbox mode */"),
            "{after}"
        );
        assert!(after.contains("@@GLOBAL.X=1"), "{after}");
        assert!(after.contains("INSERT INTO `a` VALUES (9);"), "{after}");
        assert!(after.contains("CREATE TRIGGER"), "{after}");
        assert!(after.contains("CREATE VIEW `v` AS select 1;"), "{after}");
        assert!(
            after.ends_with("-- Dump completed on 2026-11-21 10:00:00\n"),
            "{after}"
        );
        assert!(!after.contains("VALUES (3"), "{after}");
        assert!(!after.contains("LOCK TABLES"), "{after}");
        assert_eq!(insert_table(text(&pieces[4]).as_bytes()), "a");
    }

    #[test]
    fn a_dump_cut_short_is_an_error() {
        for cut in [
            "-- Table structure for table `a`\nINSERT INTO `a` VALUES\n(1),\n",
            "-- Table structure for table `a`\nCREATE TABLE `a` (\n",
            "-- Table structure for table `a`\nCREATE TABLE `a` (id int);\n",
        ] {
            let err = pieces(&mut cut.as_bytes(), None, &mut |_| Ok(())).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn definers_are_renamed_outside_data() {
        let d = Definer::new("blog", "blogcopy");
        let dump = "-- Table structure for table `t`\n/*!50001 CREATE VIEW `t` AS SELECT 1 AS `DEFINER=`blog`@` */;\n-- Dumping data for table `t`\nINSERT INTO `t` VALUES ('DEFINER=`blog`@');\n/*!50013 DEFINER=`blog`@`%` SQL SECURITY DEFINER */\n-- Dump completed on x\n";
        let (pieces, after) = read(dump, Some(&d));
        assert!(
            text(&pieces[0]).contains("DEFINER=`blogcopy`@"),
            "{pieces:?}"
        );
        assert_eq!(
            text(&pieces[1]),
            "INSERT INTO `t` VALUES ('DEFINER=`blog`@');"
        );
        assert!(after.contains("/*!50013 DEFINER=`blogcopy`@`%`"), "{after}");
    }
}
