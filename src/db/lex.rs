//! A SQL lexer just deep enough to find where a dump's statements end, the way the server's
//! own client does: quoted strings and identifiers, `--`/`#` line comments, `/* */` comments,
//! executable comments (`/*!50003 …*/`, `/*M!…*/`), and the `DELIMITER` command — honoured
//! only at the start of a line between statements, never inside a string, a comment or a
//! body. A tenant's text (rows, trigger and routine bodies, comments) can therefore never end
//! a statement early or change the delimiter.
//!
//! Statement text is passed on byte for byte (comments inside it included), so definitions
//! come back exactly as they were written.

use std::io::{self, BufRead};

/// Where the lexer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum At {
    /// In code (possibly inside an executable comment, see [`Lexer::cond`]).
    #[default]
    Code,
    /// Inside a string or identifier opened by this quote byte.
    Quote(u8),
    /// Inside a `/* … */` comment.
    Block,
    /// Inside a `--` or `#` comment, up to the end of the line.
    Line,
}

/// The lexer's state, carried from byte to byte and line to line.
#[derive(Debug, Clone, Default)]
pub struct Lexer {
    pub at: At,
    /// Inside an executable comment `/*!… */`, whose content is code.
    pub cond: bool,
    /// `sql_mode` has NO_BACKSLASH_ESCAPES: `\` escapes nothing in strings.
    pub no_backslash_escapes: bool,
    /// `sql_mode` has ANSI_QUOTES: `"` quotes identifiers, where `\` escapes nothing.
    pub ansi_quotes: bool,
}

impl Lexer {
    /// Consumes the token that starts at `s[i]` and returns its length (at least 1). The state
    /// afterwards tells where the next byte is; a caller that needs to know where *this* token
    /// was reads [`Lexer::at`] before the call.
    pub fn step(&mut self, s: &[u8], i: usize) -> usize {
        let b = s[i];
        let next = s.get(i + 1).copied();
        match self.at {
            At::Code => match b {
                b'\'' | b'"' | b'`' => {
                    self.at = At::Quote(b);
                    1
                }
                b'#' => {
                    self.at = At::Line;
                    1
                }
                b'-' if next == Some(b'-')
                    && s.get(i + 2)
                        .is_none_or(|c| c.is_ascii_whitespace() || *c < 0x20) =>
                {
                    self.at = At::Line;
                    2
                }
                b'/' if next == Some(b'*') => {
                    if s.get(i + 2) == Some(&b'!') {
                        self.cond = true;
                        3
                    } else if s.get(i + 2) == Some(&b'M') && s.get(i + 3) == Some(&b'!') {
                        self.cond = true;
                        4
                    } else {
                        self.at = At::Block;
                        2
                    }
                }
                b'*' if self.cond && next == Some(b'/') => {
                    self.cond = false;
                    2
                }
                _ => 1,
            },
            At::Quote(q) => {
                if b == b'\\' && self.escapes(q) {
                    if next.is_some() {
                        2
                    } else {
                        1
                    }
                } else if b == q {
                    // A doubled quote ('', "", ``) closes and reopens: the same string.
                    self.at = At::Code;
                    1
                } else {
                    1
                }
            }
            At::Block => {
                if b == b'*' && next == Some(b'/') {
                    self.at = At::Code;
                    2
                } else {
                    1
                }
            }
            At::Line => {
                if b == b'\n' {
                    self.at = At::Code;
                }
                1
            }
        }
    }

    fn escapes(&self, quote: u8) -> bool {
        match quote {
            b'`' => false,
            b'"' if self.ansi_quotes => false,
            _ => !self.no_backslash_escapes,
        }
    }

    /// Notes a `SET sql_mode = '…'` statement's effect on how strings are read.
    fn observe(&mut self, stmt: &[u8]) {
        // Settings are short and start so; rows (the bulk) are never looked at twice.
        if stmt.len() > 4096
            || !(stmt.starts_with(b"/*!") || stmt[..3.min(stmt.len())].eq_ignore_ascii_case(b"SET"))
        {
            return;
        }
        let upper: Vec<u8> = stmt
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .map(u8::to_ascii_uppercase)
            .collect();
        let Some(at) = find(&upper, b"SQL_MODE=") else {
            return;
        };
        if !upper.starts_with(b"SET") && !upper.starts_with(b"/*!") {
            return;
        }
        let value = &upper[at + 9..];
        if value.starts_with(b"'") || value.starts_with(b"\"") {
            self.no_backslash_escapes = find(value, b"NO_BACKSLASH_ESCAPES").is_some();
            self.ansi_quotes = find(value, b"ANSI_QUOTES").is_some()
                || find(value, b"'ANSI'").is_some()
                || find(value, b",ANSI").is_some();
        } else {
            // `@OLD_SQL_MODE`, `@saved_sql_mode`: back to what the dump started with.
            self.no_backslash_escapes = false;
            self.ansi_quotes = false;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One unit of a dump, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A `--`/`#` comment line between statements (trimmed), e.g. `-- Table structure for …`.
    Comment(Vec<u8>),
    /// A statement without its delimiter, trimmed; `custom` when the delimiter was not `;`.
    Statement { text: Vec<u8>, custom: bool },
}

/// Splits a dump into [`Item`]s, calling `each` for every one; returns an error of kind
/// `UnexpectedEof` when the input ends inside a statement, string or comment. Only the
/// statement at hand is held in memory.
pub fn items(
    input: &mut dyn BufRead,
    each: &mut dyn FnMut(Item) -> io::Result<()>,
) -> io::Result<()> {
    let mut lx = Lexer::default();
    let mut delimiter: Vec<u8> = b";".to_vec();
    let mut stmt: Vec<u8> = Vec::new();
    // The statement so far holds something other than whitespace.
    let mut started = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let blank = !started && lx.at == At::Code && !lx.cond;
        if blank {
            let t = line.trim_ascii();
            // Between statements: the client's own commands and the dump's comment lines.
            if t.len() > 10 && t[..10].eq_ignore_ascii_case(b"DELIMITER ") {
                let d = t[10..].trim_ascii();
                if d.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "DELIMITER without a delimiter",
                    ));
                }
                delimiter = d.to_vec();
                stmt.clear();
                continue;
            }
            if t.starts_with(b"#") || is_dash_comment(t) {
                each(Item::Comment(t.to_vec()))?;
                stmt.clear();
                continue;
            }
        }
        let mut i = 0;
        let mut from = 0; // start of the part of `line` not yet in `stmt`
        while i < line.len() {
            // Skip what cannot end or change anything (most of a dump: the rows' values).
            let skip = match lx.at {
                At::Quote(q) if lx.escapes(q) => memchr::memchr2(q, b'\\', &line[i..]),
                At::Quote(q) => memchr::memchr(q, &line[i..]),
                At::Block => memchr::memchr(b'*', &line[i..]),
                At::Line => memchr::memchr(b'\n', &line[i..]),
                At::Code => line[i..]
                    .iter()
                    .position(|&b| SPECIAL[b as usize] || b == delimiter[0]),
            };
            let j = skip.map_or(line.len(), |j| i + j);
            if !started && j > i {
                started = lx.at != At::Code || !line[i..j].iter().all(u8::is_ascii_whitespace);
            }
            i = j;
            if i >= line.len() {
                break;
            }
            if lx.at == At::Code && line[i..].starts_with(&delimiter) {
                stmt.extend_from_slice(&line[from..i]);
                let mut text = std::mem::take(&mut stmt);
                trim_in_place(&mut text);
                if !text.is_empty() {
                    lx.observe(&text);
                    each(Item::Statement {
                        text,
                        custom: delimiter != b";",
                    })?;
                }
                started = false;
                i += delimiter.len();
                from = i;
                continue;
            }
            let was = lx.at;
            let n = lx.step(&line, i);
            if !started && (was != At::Code || !line[i].is_ascii_whitespace()) {
                started = true;
            }
            i += n.min(line.len() - i);
        }
        stmt.extend_from_slice(&line[from..]);
        if !started {
            stmt.clear();
        }
    }
    if started || lx.at != At::Code || lx.cond {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the dump ends inside a statement",
        ));
    }
    Ok(())
}

/// Trims ASCII whitespace at both ends without copying the rest.
fn trim_in_place(v: &mut Vec<u8>) {
    let end = v.trim_ascii_end().len();
    v.truncate(end);
    let start = v.len() - v.trim_ascii_start().len();
    if start > 0 {
        v.drain(..start);
    }
}

/// Bytes at which code can change state (quotes, comment starts, an executable comment's end).
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    let s = b"'\"`#-/*";
    while k < s.len() {
        t[s[k] as usize] = true;
        k += 1;
    }
    t
};

/// `--` followed by whitespace or the end of the line: a comment, as the server reads it.
fn is_dash_comment(t: &[u8]) -> bool {
    t.starts_with(b"--") && t.get(2).is_none_or(|c| c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        items(&mut text.as_bytes(), &mut |it| {
            out.push(match it {
                Item::Comment(c) => format!("#{}", String::from_utf8_lossy(&c)),
                Item::Statement { text, custom } => {
                    format!(
                        "{}{}",
                        if custom { "!" } else { "" },
                        String::from_utf8_lossy(&text)
                    )
                }
            });
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn statements_end_only_at_a_delimiter_in_code() {
        assert_eq!(
            split("SELECT 'a;b', \"c;\", `d;`; SELECT 'it''s;', 'x\\';y';\n-- c;\nSELECT 1 -- x;\n;\n"),
            [
                "SELECT 'a;b', \"c;\", `d;`",
                "SELECT 'it''s;', 'x\\';y'",
                "#-- c;",
                "SELECT 1 -- x;",
            ]
        );
        assert_eq!(
            split("SELECT 1 /* ; */ ;SELECT 2;"),
            ["SELECT 1 /* ; */", "SELECT 2"]
        );
        assert_eq!(
            split("/*!40101 SET NAMES utf8mb4 */;\n"),
            ["/*!40101 SET NAMES utf8mb4 */"]
        );
    }

    #[test]
    fn delimiter_counts_only_between_statements() {
        let dump = "DELIMITER ;;\nCREATE PROCEDURE p() BEGIN\n/*\nDELIMITER ;\nINSERT INTO `t` VALUES (1); GRANT ALL ON *.* TO x;\n*/\nSELECT 1; END ;;\nDELIMITER ;\nSELECT 2;\n";
        assert_eq!(
            split(dump),
            [
                "!CREATE PROCEDURE p() BEGIN\n/*\nDELIMITER ;\nINSERT INTO `t` VALUES (1); GRANT ALL ON *.* TO x;\n*/\nSELECT 1; END",
                "SELECT 2",
            ]
        );
        // A DELIMITER line inside a string is text.
        assert_eq!(
            split("INSERT INTO `t` VALUES ('\nDELIMITER ;;\n');\n"),
            ["INSERT INTO `t` VALUES ('\nDELIMITER ;;\n')"]
        );
    }

    #[test]
    fn a_nested_comment_in_an_executable_comment_keeps_the_body_whole() {
        // What mariadb-dump writes for a trigger whose body holds a comment.
        let dump = "DELIMITER ;;\n/*!50003 CREATE*/ /*!50017 DEFINER=`s`@`%`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t1 FOR EACH ROW BEGIN\n/*\nDELIMITER ;\nINSERT INTO `t1` VALUES (101,\"x\"); CREATE TABLE `o`.`p`(x int);\n*/\nSET NEW.v=NEW.v; END \n*/;;\nDELIMITER ;\n-- Dump completed\n";
        let got = split(dump);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("!/*!50003 CREATE*/"), "{got:?}");
        assert!(got[0].ends_with("SET NEW.v=NEW.v; END \n*/"), "{got:?}");
        assert_eq!(got[1], "#-- Dump completed");
    }

    #[test]
    fn no_backslash_escapes_changes_how_strings_end() {
        let dump = "SET sql_mode = 'NO_BACKSLASH_ESCAPES';\nSELECT 'a\\';SELECT 2;\nSET sql_mode = @saved_sql_mode;\nSELECT 'b\\';c';\n";
        assert_eq!(
            split(dump),
            [
                "SET sql_mode = 'NO_BACKSLASH_ESCAPES'",
                "SELECT 'a\\'",
                "SELECT 2",
                "SET sql_mode = @saved_sql_mode",
                "SELECT 'b\\';c'",
            ]
        );
    }

    #[test]
    fn input_that_ends_inside_something_is_an_error() {
        for cut in ["SELECT 1", "SELECT 'a;\n", "/* x", "/*!40101 SET x=1;"] {
            let err = items(&mut cut.as_bytes(), &mut |_| Ok(())).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{cut:?}");
        }
    }
}
