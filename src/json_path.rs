//! The field path of a `serde_json` error (`jwtRules[0].fromHeaders[1].name`), recovered from the
//! error's line and column after the fact, so that the configuration is parsed by plain
//! `serde_json::from_str` (no path-tracking deserializer in the .wasm).
//!
//! The text is walked up to the error position with an explicit stack of open objects (current
//! key) and arrays (current index). The path is the one serde_path_to_error reported for the same
//! error (same format: `.` between keys, `[i]` for indices, `?` for an object slot whose key could
//! not be read, empty for the root), except where the position alone cannot tell: `duplicate field`,
//! and an error inside an object given for an enum field, name the key (or `?`) rather than the
//! enclosing object / the field. Runs only when a configuration is rejected.

use serde_json::error::Category;

/// What the walk stopped in. serde_json reports data errors (wrong type, unknown field, missing
/// field) after the bytes it consumed, but syntax errors at the offending byte it only peeked at:
/// that byte is not walked, only looked at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Syntax(u8),
    Eof,
}

/// Where the walk is inside the innermost open container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// After `{` or `[`.
    Start,
    AfterComma,
    /// Inside an object key.
    Key,
    AfterKey,
    AfterColon,
    /// Inside a value (string, number, literal, or an open container).
    Value,
    AfterValue,
}

struct Frame {
    object: bool,
    at: At,
    index: usize,
    key: Vec<u8>,
}

enum Segment {
    Current,
    Unknown,
    None,
}

/// The path of `err` in `text` (empty for the root or when the error has no position).
pub fn error_path(text: &str, err: &serde_json::Error) -> String {
    let bytes = text.as_bytes();
    let Some(offset) = offset(bytes, err.line(), err.column()) else {
        return String::new();
    };
    let kind = match err.classify() {
        Category::Eof => Kind::Eof,
        Category::Syntax => match offset.checked_sub(1).and_then(|i| bytes.get(i)) {
            Some(&b) => Kind::Syntax(b),
            None => Kind::Eof,
        },
        Category::Data | Category::Io => Kind::Data,
    };
    let end = match kind {
        Kind::Syntax(_) => offset.saturating_sub(1),
        Kind::Data | Kind::Eof => offset,
    };
    path_at(bytes, end, kind)
}

/// Byte offset of serde_json's (1-based line, column = bytes consumed on that line).
fn offset(bytes: &[u8], line: usize, column: usize) -> Option<usize> {
    let start = match line {
        0 => return None,
        1 => 0,
        _ => {
            let newline = bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .nth(line - 2);
            newline?.0 + 1
        }
    };
    Some(start.saturating_add(column).min(bytes.len()))
}

fn path_at(bytes: &[u8], end: usize, kind: Kind) -> String {
    let bytes = bytes.get(..end).unwrap_or(bytes);
    let mut stack: Vec<Frame> = Vec::new();
    // Start of the number or literal being walked, if any.
    let mut scalar: Option<usize> = None;
    let mut in_string = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if in_string {
            let key = match stack.last_mut() {
                Some(f) if f.at == At::Key => Some(&mut f.key),
                _ => None,
            };
            match b {
                b'"' => {
                    in_string = false;
                    if let Some(f) = stack.last_mut() {
                        f.at = if f.at == At::Key {
                            At::AfterKey
                        } else {
                            At::AfterValue
                        };
                    }
                    i += 1;
                }
                b'\\' => match unescape(bytes, i) {
                    Some((c, len)) => {
                        if let Some(key) = key {
                            let mut buf = [0; 4];
                            key.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        i += len;
                    }
                    // Cut off inside the escape: still in the string.
                    None => break,
                },
                _ => {
                    if let Some(key) = key {
                        key.push(b);
                    }
                    i += 1;
                }
            }
            continue;
        }
        if scalar.is_some() {
            if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
                i += 1;
                continue;
            }
            scalar = None;
            if let Some(f) = stack.last_mut() {
                f.at = At::AfterValue;
            }
            // `b` is walked below.
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'{' | b'[' => {
                if let Some(f) = stack.last_mut() {
                    f.at = At::Value;
                }
                stack.push(Frame {
                    object: b == b'{',
                    at: At::Start,
                    index: 0,
                    key: Vec::new(),
                });
            }
            b'}' | b']' => {
                // Only a container that may end here is closed: serde_json reports an unknown
                // field after also consuming a `}` that wrongly follows the key (`{"bogus"}`).
                if matches!(stack.last(), Some(f) if matches!(f.at, At::Start | At::AfterValue)) {
                    stack.pop();
                    if let Some(f) = stack.last_mut() {
                        f.at = At::AfterValue;
                    }
                }
            }
            b':' => {
                if let Some(f) = stack.last_mut() {
                    f.at = At::AfterColon;
                }
            }
            b',' => {
                if let Some(f) = stack.last_mut() {
                    if !f.object {
                        f.index = f.index.saturating_add(1);
                    }
                    f.at = At::AfterComma;
                }
            }
            b'"' => {
                in_string = true;
                if let Some(f) = stack.last_mut() {
                    if f.object && matches!(f.at, At::Start | At::AfterComma) {
                        f.key.clear();
                        f.at = At::Key;
                    } else {
                        f.at = At::Value;
                    }
                }
            }
            _ => {
                scalar = Some(i);
                if let Some(f) = stack.last_mut() {
                    f.at = At::Value;
                }
            }
        }
        i += 1;
    }
    // A number or literal cut off by a syntax error (or the end of the input) was complete if
    // serde_json went on to look for what follows it: `{"a":1x}` fails after the value, `{"a":tru}`
    // and `[01]` inside it.
    if let (Some(start), Some(f)) = (scalar, stack.last_mut()) {
        let s = bytes.get(start..).unwrap_or_default();
        let next_is_digit = matches!(kind, Kind::Syntax(b) if b.is_ascii_digit());
        let complete = matches!(s, b"true" | b"false" | b"null")
            || (s.last().is_some_and(u8::is_ascii_digit) && !next_is_digit);
        if complete && kind != Kind::Data {
            f.at = At::AfterValue;
        }
    }

    let mut path = String::new();
    let last = stack.len().saturating_sub(1);
    for (depth, f) in stack.iter().enumerate() {
        let segment = if depth < last {
            Segment::Current
        } else {
            innermost(f, kind)
        };
        match segment {
            Segment::None => {}
            Segment::Unknown => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push('?');
            }
            Segment::Current if f.object => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&String::from_utf8_lossy(&f.key));
            }
            Segment::Current => {
                path.push('[');
                path.push_str(&f.index.to_string());
                path.push(']');
            }
        }
    }
    path
}

/// The last segment, from where in the innermost container the error was found.
fn innermost(f: &Frame, kind: Kind) -> Segment {
    match (f.object, f.at, kind) {
        // Reading the key failed.
        (true, At::Start | At::AfterComma | At::Key, _) => Segment::Unknown,
        // Unknown field: the key. Missing `:`: the object.
        (true, At::AfterKey, Kind::Data) => Segment::Current,
        (true, At::AfterKey, _) => Segment::None,
        (true, At::AfterColon | At::Value, _) => Segment::Current,
        (true, At::AfterValue, Kind::Data) => Segment::Current,
        // Neither `,` nor `}` after the value: the next key could not be read.
        (true, At::AfterValue, _) => Segment::Unknown,
        // EOF or `]` where an element must follow, or no `,`/`]` after one: the array.
        (false, At::Start | At::AfterComma, Kind::Eof) => Segment::None,
        (false, At::AfterComma, Kind::Syntax(b']')) => Segment::None,
        (false, At::AfterValue, Kind::Syntax(_) | Kind::Eof) => Segment::None,
        (false, _, _) => Segment::Current,
    }
}

/// The escape at `bytes[i]` (a backslash): the character and the length of the escape, or `None`
/// if the input ends inside it. Invalid escapes decode to U+FFFD (serde_json rejects them anyway).
fn unescape(bytes: &[u8], i: usize) -> Option<(char, usize)> {
    let c = match *bytes.get(i + 1)? {
        b'u' => {
            let hi = hex4(bytes, i + 2)?;
            if (0xD800..0xDC00).contains(&hi) && bytes.get(i + 6..i + 8) == Some(b"\\u") {
                let lo = hex4(bytes, i + 8)?;
                if (0xDC00..0xE000).contains(&lo) {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return Some((char::from_u32(c).unwrap_or('\u{FFFD}'), 12));
                }
            }
            return Some((char::from_u32(hi).unwrap_or('\u{FFFD}'), 6));
        }
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{C}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => '\u{FFFD}',
    };
    Some((c, 2))
}

fn hex4(bytes: &[u8], i: usize) -> Option<u32> {
    let digits = bytes.get(i..i + 4)?;
    let mut v = 0;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16).unwrap_or(0);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(json: &str) -> String {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => error_path(json, &e),
        }
    }

    /// serde_path_to_error's path (what the filter reported before).
    fn tracked(json: &str) -> String {
        let de = &mut serde_json::Deserializer::from_str(json);
        match serde_path_to_error::deserialize::<_, serde_json::Value>(de) {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => e.path().to_string(),
        }
    }

    #[test]
    fn free_form_values() {
        for (json, want) in [
            (r#"{"a":[1,{"b\"c":{"d":[true,]}}]}"#, r#"a[1].b"c.d"#),
            (r#"{"a":{"b":nul}}"#, "a.b"),
            (r#"{"a":{"b":null x}}"#, "a.?"),
            (r#"[{"a":1},{"a":[1.5e3 2]}]"#, "[1].a"),
            (r#"[{"a":1},{"a":[-]}]"#, "[1].a[0]"),
            ("{\"\\u00e9\\ud83d\\ude00\\n\":[,]}", "é😀\n[0]"),
            ("\n\n  {\"a\":\n[1,\n2,\n}", "a[2]"),
        ] {
            assert_eq!(path(json), want, "{json}");
            assert_eq!(tracked(json), want, "{json}");
        }
        // Trailing characters: serde_path_to_error's entry point did not look.
        assert_eq!(path("{} {}"), "");
    }

    #[test]
    fn positions() {
        assert_eq!(offset(b"ab\ncd", 1, 2), Some(2));
        assert_eq!(offset(b"ab\ncd", 2, 0), Some(3));
        assert_eq!(offset(b"ab\ncd", 2, 9), Some(5));
        assert_eq!(offset(b"ab\ncd", 3, 0), None);
        assert_eq!(offset(b"ab", 0, 0), None);
    }

    /// Any prefix of any input, however it is cut (inside escapes, multi-byte characters,
    /// unbalanced brackets), gives a path without panicking.
    #[test]
    fn never_panics() {
        let texts = [
            r#"{"a\"b\\":[{"\u00e9\ud83d\ude00":"x\u12"},-1.5e+3,tru,{"c":]]}}}]]"#,
            "]]}},:\"é✓\\",
            r#"\u{"\ud800\u"#,
        ];
        for text in texts {
            let bytes = text.as_bytes();
            for end in 0..=bytes.len() + 1 {
                for kind in [
                    Kind::Data,
                    Kind::Eof,
                    Kind::Syntax(b']'),
                    Kind::Syntax(b'1'),
                ] {
                    let _ = path_at(bytes, end, kind);
                }
            }
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            path_at(deep.as_bytes(), deep.len(), Kind::Eof).len(),
            3 * 99_999
        );
    }
}
