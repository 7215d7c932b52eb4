//! Reading a mysqldump/mariadb-dump file once, as the statements that load it: the
//! preamble's **session** settings, each table's **schema** (run in order on one connection),
//! the **rows** (one `INSERT` statement each, the bulk of any dump, which any connection may
//! run in any order once its table exists), and the statements that must come **after the
//! rows** — each table's triggers, the final views, routines and events — which run in order
//! once every row is in.
//!
//! Statements are found by a real lexer ([`super::lex`]), never by a line's prefix: a
//! tenant's rows, bodies and comments can hold any text, `DELIMITER` lines included, and it
//! stays inside the statement it belongs to. The dump's structure is read from what only the
//! dump tool writes between statements (its `--` comment lines). Nothing is held in memory but
//! the statement at hand and the after-rows statements (definitions, not data).

use std::io::{self, BufRead};

use super::lex::{self, At, Item, Lexer};

/// What a statement of a dump is, by where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Before the first table: session settings every connection replays.
    Preamble,
    /// Table (or stand-in view) structure, before its rows.
    Schema,
    /// An `INSERT` of a table's rows.
    Rows,
    /// After the rows: triggers, final views, routines, events, restoring settings.
    AfterRows,
    /// `LOCK TABLES`/`UNLOCK TABLES`: left out (rows load over other connections).
    Lock,
}

/// Walks a dump's items in order, telling what each statement is.
#[derive(Debug, Default)]
pub struct Classifier {
    in_sections: bool,
    in_tail: bool,
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
];
const TAIL_STATEMENT: &[u8] = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */";

impl Classifier {
    /// Takes in a comment line written between statements.
    pub fn comment(&mut self, line: &[u8]) {
        if self.in_tail {
            return;
        }
        if TAIL_STARTS.iter().any(|p| line.starts_with(p)) {
            self.in_tail = true;
        } else if SECTION_STARTS.iter().any(|p| line.starts_with(p)) {
            self.in_sections = true;
            self.rows_seen = false;
        } else if self.in_sections && line.starts_with(b"-- Dumping data for table ") {
            self.rows_seen = true;
        }
    }

    /// What the statement `text` (with its delimiter `custom` or `;`) is.
    pub fn statement(&mut self, text: &[u8], custom: bool) -> Kind {
        if !self.in_tail && text == TAIL_STATEMENT {
            self.in_tail = true;
        }
        if self.in_sections && !self.in_tail && !custom {
            if text.starts_with(b"INSERT INTO `") {
                self.rows_seen = true;
                return Kind::Rows;
            }
            if text.starts_with(b"LOCK TABLES `") || text == b"UNLOCK TABLES" {
                return Kind::Lock;
            }
        }
        if custom {
            // Trigger and routine bodies come after the rows.
            self.rows_seen |= self.in_sections;
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
    /// connection runs first; settings of the server itself (`@@GLOBAL`) are left out.
    Session(Vec<u8>),
    /// A table's structure: runs before any later piece.
    Schema(Vec<u8>),
    /// One `INSERT`: runs once the schema before it has.
    Rows(Vec<u8>),
}

/// Reads a dump once, calling `each` with its pieces in order (see [`Piece`]); returns the
/// statements to run, in order, after every row is in. `definer` renames definers everywhere
/// but in rows. A dump that ends inside a statement or without its completion trailer (cut
/// short) is an `UnexpectedEof` error, raised before the caller runs anything after the rows.
pub fn pieces(
    input: &mut dyn BufRead,
    definer: Option<&Definer>,
    each: &mut dyn FnMut(Piece) -> io::Result<()>,
) -> io::Result<Vec<Vec<u8>>> {
    let mut c = Classifier::default();
    let mut after = Vec::new();
    let mut complete = false;
    let rename = |stmt: Vec<u8>| match definer {
        Some(d) => d.apply(&stmt),
        None => stmt,
    };
    lex::items(input, &mut |item| {
        match item {
            Item::Comment(line) => {
                complete = crate::snapshot::archive::has_dump_trailer(&line);
                c.comment(&line);
            }
            Item::Statement { text, custom } => {
                complete = false;
                match c.statement(&text, custom) {
                    Kind::Preamble => {
                        if !contains(&text, b"@@GLOBAL") {
                            each(Piece::Session(text))?;
                        }
                    }
                    Kind::Schema => each(Piece::Schema(rename(text)))?,
                    Kind::Rows => each(Piece::Rows(text))?,
                    Kind::AfterRows => after.push(rename(text)),
                    Kind::Lock => {}
                }
            }
        }
        Ok(())
    })?;
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

/// Makes the loading account the definer of every view, trigger, routine and event
/// (`DEFINER=`user`@`host`` in code — never in a string, an identifier or a comment): the
/// dump loads as the site's own user, which may name only itself, and an object a host admin
/// once created in the site's database runs as the site from then on, never as the admin. A
/// dump loaded under another name (a clone, a drill) gets its own user the same way.
#[derive(Debug, Clone)]
pub struct Definer {
    to: Vec<u8>,
}

impl Definer {
    pub fn new(user: &str, host: &str) -> Definer {
        Definer {
            to: format!(
                "DEFINER=`{}`@`{}`",
                user.replace('`', "``"),
                host.replace('`', "``")
            )
            .into_bytes(),
        }
    }

    fn apply(&self, stmt: &[u8]) -> Vec<u8> {
        const KEY: &[u8] = b"DEFINER=";
        let mut out = Vec::with_capacity(stmt.len());
        let mut lx = Lexer::default();
        let mut i = 0;
        while i < stmt.len() {
            if lx.at == At::Code && stmt[i..].starts_with(KEY) {
                if let Some(n) = account_len(&stmt[i + KEY.len()..]) {
                    out.extend_from_slice(&self.to);
                    i += KEY.len() + n;
                    continue;
                }
            }
            let n = lx.step(stmt, i).min(stmt.len() - i);
            out.extend_from_slice(&stmt[i..i + n]);
            i += n;
        }
        out
    }
}

/// The length of `` `user`@`host` `` at the start of `s` (the dump tool's spelling).
fn account_len(s: &[u8]) -> Option<usize> {
    let user = quoted_len(s)?;
    if s.get(user) != Some(&b'@') {
        return None;
    }
    Some(user + 1 + quoted_len(&s[user + 1..])?)
}

/// The length of a backtick-quoted identifier at the start of `s` (`` `` `` escapes one).
fn quoted_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'`') {
        return None;
    }
    let mut i = 1;
    loop {
        match s.get(i)? {
            b'`' if s.get(i + 1) == Some(&b'`') => i += 2,
            b'`' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n/*!40014 SET @@GLOBAL.X=1 */;\n\n--\n-- Table structure for table `a`\n--\nCREATE TABLE `a` (id int);\n--\n-- Dumping data for table `a`\n--\nLOCK TABLES `a` WRITE;\nINSERT INTO `a` VALUES\n(1,'x;'),\n(2,'INSERT INTO `b`');\nINSERT INTO `a` VALUES (3,'y');\nUNLOCK TABLES;\n--\n-- Temporary table structure for view `v`\n--\nCREATE TABLE `v` (id int);\n--\n-- Table structure for table `b`\n--\nCREATE TABLE `b` (id int);\nDELIMITER ;;\nCREATE PROCEDURE-ish body\nINSERT INTO `a` VALUES (9);\nEND ;;\nDELIMITER ;\nINSERT INTO `b` VALUES (3);\nDELIMITER ;;\nCREATE TRIGGER t AFTER INSERT ON b FOR EACH ROW\nINSERT INTO `a` VALUES (NEW.id) ;;\nDELIMITER ;\n--\n-- Final view structure for view `v`\n--\nDROP TABLE IF EXISTS `v`;\nCREATE VIEW `v` AS select 1;\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n-- Dump completed on 2026-11-21 10:00:00\n";

    fn read(text: &str, definer: Option<&Definer>) -> (Vec<String>, Vec<String>) {
        let mut seen = Vec::new();
        let after = pieces(&mut text.as_bytes(), definer, &mut |p| {
            seen.push(match p {
                Piece::Session(b) => format!("session: {}", String::from_utf8_lossy(&b)),
                Piece::Schema(b) => format!("schema: {}", String::from_utf8_lossy(&b)),
                Piece::Rows(b) => format!("rows: {}", String::from_utf8_lossy(&b)),
            });
            Ok(())
        })
        .unwrap();
        let after = after
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        (seen, after)
    }

    #[test]
    fn a_dump_reads_as_ordered_statements_and_what_comes_after() {
        let (pieces, after) = read(DUMP, None);
        assert_eq!(
            pieces,
            [
                "session: /*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */",
                "session: /*!40103 SET TIME_ZONE='+00:00' */",
                "schema: CREATE TABLE `a` (id int)",
                "rows: INSERT INTO `a` VALUES\n(1,'x;'),\n(2,'INSERT INTO `b`')",
                "rows: INSERT INTO `a` VALUES (3,'y')",
                "schema: CREATE TABLE `v` (id int)",
                "schema: CREATE TABLE `b` (id int)",
                "rows: INSERT INTO `b` VALUES (3)",
            ]
        );
        // Bodies (with the INSERTs inside them) and views come after every row, in order;
        // no row, no table lock, no server-wide setting.
        assert_eq!(
            after,
            [
                "CREATE PROCEDURE-ish body\nINSERT INTO `a` VALUES (9);\nEND",
                "CREATE TRIGGER t AFTER INSERT ON b FOR EACH ROW\nINSERT INTO `a` VALUES (NEW.id)",
                "DROP TABLE IF EXISTS `v`",
                "CREATE VIEW `v` AS select 1",
                "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */",
            ]
        );
        assert_eq!(insert_table(b"INSERT INTO `a` VALUES (3,'y')"), "a");
    }

    #[test]
    fn a_tenants_trigger_that_imitates_dump_syntax_stays_one_statement() {
        let dump = "-- Table structure for table `t1`\nCREATE TABLE `t1` (id int);\n-- Dumping data for table `t1`\nINSERT INTO `t1` VALUES (1,'a');\nDELIMITER ;;\n/*!50003 CREATE*/ /*!50017 DEFINER=`s`@`%`*/ /*!50003 TRIGGER tr2 BEFORE INSERT ON t1 FOR EACH ROW BEGIN\n/*\nDELIMITER ;\nINSERT INTO `t1` VALUES (101,\"x\"); CREATE TABLE `othersite`.`pwned`(x int); GRANT ALL PRIVILEGES ON *.* TO `site`@`%` WITH GRANT OPTION;\n*/\nSET NEW.v=NEW.v; END \n*/;;\nDELIMITER ;\n-- Dump completed on x\n";
        let (pieces, after) = read(dump, None);
        assert_eq!(
            pieces,
            [
                "schema: CREATE TABLE `t1` (id int)",
                "rows: INSERT INTO `t1` VALUES (1,'a')",
            ]
        );
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(after[0].contains("GRANT ALL PRIVILEGES") && after[0].ends_with("END \n*/"));
    }

    #[test]
    fn a_dump_cut_short_is_an_error() {
        for cut in [
            "-- Table structure for table `a`\nINSERT INTO `a` VALUES\n(1),\n",
            "-- Table structure for table `a`\nCREATE TABLE `a` (\n",
            "-- Table structure for table `a`\nCREATE TABLE `a` (id int);\n",
            "-- Table structure for table `a`\nINSERT INTO `a` VALUES ('-- Dump completed on x\n",
        ] {
            let err = pieces(&mut cut.as_bytes(), None, &mut |_| Ok(())).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{cut:?}");
        }
    }

    #[test]
    fn definers_are_renamed_in_code_only() {
        let d = Definer::new("blogcopy", "%");
        let dump = "-- Table structure for table `t`\n/*!50001 CREATE VIEW `t` AS SELECT 1 AS `DEFINER=`blog`@` */;\n-- Dumping data for table `t`\nINSERT INTO `t` VALUES ('DEFINER=`blog`@');\n/*!50013 DEFINER=`blog`@`%` SQL SECURITY DEFINER */ /* DEFINER=`blog`@ */ SELECT 'DEFINER=`blog`@';\n-- Dump completed on x\n";
        let (pieces, after) = read(dump, Some(&d));
        assert_eq!(
            pieces[1],
            "rows: INSERT INTO `t` VALUES ('DEFINER=`blog`@')"
        );
        assert_eq!(
            after,
            ["/*!50013 DEFINER=`blogcopy`@`%` SQL SECURITY DEFINER */ /* DEFINER=`blog`@ */ SELECT 'DEFINER=`blog`@'"]
        );
        // Whoever the definer was (a host admin too), it becomes the loading account.
        let (_, after) = read(
            "-- Dumping routines for database 'x'\nDELIMITER ;;\n/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER t BEFORE INSERT ON a FOR EACH ROW SET @x=1 */;;\nDELIMITER ;\nCREATE DEFINER=`o``dd`@`%` PROCEDURE p() SELECT 1;\n-- Dump completed on x\n",
            Some(&d),
        );
        assert_eq!(
            after,
            [
                "/*!50003 CREATE*/ /*!50017 DEFINER=`blogcopy`@`%`*/ /*!50003 TRIGGER t BEFORE INSERT ON a FOR EACH ROW SET @x=1 */",
                "CREATE DEFINER=`blogcopy`@`%` PROCEDURE p() SELECT 1",
            ]
        );
    }
}
