//! Words of an iptables line, split the way `iptables-restore` splits them.
//!
//! Spaces, tabs and newlines separate words. A double quote opens a quoted
//! part, in which separators are kept and a backslash takes the next character
//! as it is (iptables-save writes `\"` and `\\` in comments); the closing quote
//! ends the word. This is `add_param_to_argv` of iptables, so a comment reads
//! back exactly as the kernel got it.

use std::borrow::Cow;

/// One word of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word<'a> {
    /// The word with its quotes and escapes removed; borrowed from the line
    /// unless an escape or a quote inside it made that impossible.
    pub text: Cow<'a, str>,
    /// Some of it was in double quotes: a quoted `!` or `-x` is a value, not
    /// a negation or an option.
    pub quoted: bool,
}

/// The words of `line`, in order.
pub fn words(line: &str) -> Words<'_> {
    Words { rest: line }
}

/// An iterator over the words of a line; [`Words::rest`] is what it has not read.
#[derive(Debug, Clone)]
pub struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    /// The text after the words read so far, without leading separators: the
    /// body of a rule once its command and chain are read.
    pub fn rest(&self) -> &'a str {
        self.rest.trim_start_matches(is_separator)
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n')
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let line = self.rest();
        if line.is_empty() {
            self.rest = line;
            return None;
        }
        let mut text: Cow<'a, str> = Cow::Borrowed("");
        // Pieces of literal text are borrowed; only a word made of several
        // pieces (an escape, a quote inside it) needs its own string.
        let mut append = |piece: &'a str| {
            if piece.is_empty() {
                return;
            }
            if text.is_empty() {
                text = Cow::Borrowed(piece);
            } else {
                text.to_mut().push_str(piece);
            }
        };
        let (mut quoted, mut in_quotes, mut escaped) = (false, false, false);
        let mut piece_start = 0;
        let mut end = line.len();
        for (at, c) in line.char_indices() {
            if escaped {
                escaped = false;
            } else if in_quotes && c == '\\' {
                append(&line[piece_start..at]);
                piece_start = at + 1;
                escaped = true;
            } else if in_quotes && c == '"' {
                append(&line[piece_start..at]);
                piece_start = at + 1;
                end = at + 1;
                break;
            } else if c == '"' {
                append(&line[piece_start..at]);
                piece_start = at + 1;
                (quoted, in_quotes) = (true, true);
            } else if !in_quotes && is_separator(c) {
                end = at;
                break;
            }
        }
        if piece_start < end {
            append(&line[piece_start..end]);
        }
        self.rest = &line[end..];
        Some(Word { text, quoted })
    }
}

/// The value of a rule's `--comment`, if it has one.
pub fn comment_of(rule: &str) -> Option<Cow<'_, str>> {
    value_after(rule, |option| option == "--comment")
}

/// The chain or target a rule jumps or goes to (`-j NAME`, `-g NAME`), if any.
pub fn jump_of(rule: &str) -> Option<Cow<'_, str>> {
    value_after(rule, |option| matches!(option, "-j" | "--jump" | "-g" | "--goto"))
}

/// The word after the first unquoted word `is_option` accepts.
fn value_after<'a>(rule: &'a str, is_option: impl Fn(&str) -> bool) -> Option<Cow<'a, str>> {
    let mut words = words(rule);
    words.find(|w| !w.quoted && is_option(&w.text))?;
    words.next().map(|w| w.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        words(line).map(|w| w.text.into_owned()).collect()
    }

    #[test]
    fn quoted_words_stay_together() {
        let rule = r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -j X"#;
        assert_eq!(comment_of(rule).as_deref(), Some("ns1/svc1:p80 cluster IP"));
        assert_eq!(
            comment_of("-A X -m comment --comment ns1/svc1:p80 -j Y").as_deref(),
            Some("ns1/svc1:p80")
        );
        assert_eq!(words(rule).count(), 8);
        assert_eq!(jump_of(rule).as_deref(), Some("X"));
        assert_eq!(
            jump_of("-A X -m comment --comment \"-j\" -g Y").as_deref(),
            Some("Y")
        );
    }

    #[test]
    fn quoting_follows_iptables_restore() {
        // Escapes inside quotes, as iptables-save writes them.
        assert_eq!(
            texts(r#"--comment "a \"b\" \\ c""#),
            ["--comment", r#"a "b" \ c"#]
        );
        // A closing quote ends the word; a quote inside a word opens a quoted part.
        assert_eq!(texts(r#""a"b x"y z"w"#), ["a", "b", "xy z", "w"]);
        // Outside quotes a backslash is an ordinary character; tabs separate.
        assert_eq!(texts("a\\b\t\tc  "), ["a\\b", "c"]);
        // An empty quoted word is a word; an unterminated one runs to the end.
        assert_eq!(texts(r#"x "" "y z"#), ["x", "", "y z"]);
        assert!(texts("  \t ").is_empty());
    }

    #[test]
    fn a_quoted_bang_is_a_value() {
        let quoted: Vec<(String, bool)> = words(r#"! -s "!" x"#)
            .map(|w| (w.text.into_owned(), w.quoted))
            .collect();
        assert_eq!(
            quoted,
            [
                ("!".to_string(), false),
                ("-s".to_string(), false),
                ("!".to_string(), true),
                ("x".to_string(), false)
            ]
        );
    }

    #[test]
    fn words_borrow_unless_pieces_are_joined() {
        let line = r#"-j "a b" "c\"d""#;
        let all: Vec<Word> = words(line).collect();
        assert!(matches!(all[0].text, Cow::Borrowed("-j")));
        assert!(matches!(all[1].text, Cow::Borrowed("a b")));
        assert!(matches!(all[2].text, Cow::Owned(_)));
    }

    #[test]
    fn rest_is_the_rule_body() {
        let mut line = words("-I  CHAIN\t2  -m comment --comment \"x y\" -j A");
        line.next();
        line.next();
        assert_eq!(line.rest(), "2  -m comment --comment \"x y\" -j A");
        line.next();
        assert_eq!(line.rest(), "-m comment --comment \"x y\" -j A");
    }

    #[test]
    fn odd_lines_never_panic() {
        let text = "\"\\\"é\\ ü\" \\ \"\"\"x\t\"";
        for cut in 0..=text.len() {
            if let Some(prefix) = text.get(..cut) {
                let _ = words(prefix).count();
                let _ = comment_of(prefix);
                let _ = jump_of(prefix);
            }
        }
    }
}
