//! Making text from agents, repositories, files or the environment inert before cco prints
//! it: control characters (C0, DEL, C1 such as U+009B CSI) and bidi overrides become visible
//! `\uXXXX` escapes, so nothing printed can steer the terminal or reorder what it shows.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw: every control character and the bidi
/// embedding, override and isolate characters (U+202A–U+202E, U+2066–U+2069) and the
/// direction marks (U+200E, U+200F, U+061C).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

fn escape_where(s: &str, bad: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of output: every unsafe character escaped, newlines and tabs included.
pub fn line(s: &str) -> Cow<'_, str> {
    escape_where(s, is_unsafe)
}

/// Several lines of output (a prompt, a log): newlines and tabs stay, everything else
/// unsafe (including a carriage return, which could overwrite what a line showed) is escaped.
pub fn block(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| is_unsafe(c) && c != '\n' && c != '\t')
}

/// JSON text with every unsafe character that serde_json leaves raw (DEL, C1, bidi
/// overrides) written as a `\uXXXX` escape. Outside strings JSON text is ASCII, so each such
/// character is inside a string, where the escape means the same character.
pub fn json_text(json: &str) -> Cow<'_, str> {
    escape_where(json, is_unsafe_in_json)
}

/// serde_json escapes U+0000–U+001F itself; a newline between tokens of pretty output is
/// layout and stays.
fn is_unsafe_in_json(c: char) -> bool {
    is_unsafe(c) && c != '\n'
}

/// `value` as compact JSON, inert.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(value).map(|s| json_text(&s).into_owned())
}

/// `value` as indented JSON, inert.
pub fn json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|s| json_text(&s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\u{1b}[2Jb\u{9b}31mc\u{9d}0;title\u{7}d\u{202e}e\u{2066}f\u{7f}g\rh";

    #[test]
    fn lines_escape_every_control_and_bidi_character() {
        let out = line(HOSTILE);
        assert!(!out.chars().any(is_unsafe), "{out:?}");
        assert_eq!(
            out,
            "a\\u001b[2Jb\\u009b31mc\\u009d0;title\\u0007d\\u202ee\\u2066f\\u007fg\\u000dh"
        );
        assert_eq!(line("a\nb\tc"), "a\\u000ab\\u0009c");
        assert!(matches!(line("plain ünïcode ✅"), Cow::Borrowed(_)));
    }

    #[test]
    fn blocks_keep_their_lines() {
        assert_eq!(block("a\n\tb\u{9b}\r"), "a\n\tb\\u009b\\u000d");
    }

    #[test]
    fn direction_marks_are_escaped_too() {
        assert_eq!(
            line("a\u{200e}b\u{200f}c\u{61c}"),
            "a\\u200eb\\u200fc\\u061c"
        );
    }

    #[test]
    fn json_escapes_what_serde_leaves_raw_and_stays_the_same_value() {
        let v = serde_json::json!({"data": HOSTILE, "n": [1, 2]});
        for text in [json(&v).unwrap(), json_pretty(&v).unwrap()] {
            assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text:?}");
            assert!(text.contains("\\u009b"), "{text}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v, "the escapes decode to the same characters");
        }
    }
}
