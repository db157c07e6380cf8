//! Pegasus's escaping of binary keys and values: printable ASCII stays as it is, `\` and `"`
//! are escaped, common controls become `\n \t \r \0`, and every other byte becomes `\xHH`.
//! [`unescape`] reads the same form back, so what the shell prints can be typed again.

/// Escapes `bytes` for display.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0 => out.push_str("\\0"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out
}

/// Reads an escaped string back into bytes; a malformed escape is an error naming it.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = bytes.get(i + 1) else {
            return Err(format!("'{s}' ends with a lone backslash"));
        };
        i += 2;
        match next {
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'\'' => out.push(b'\''),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0' => out.push(0),
            b'x' | b'X' => {
                let hex = bytes.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                let v = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("'{s}': \\x must be followed by two hex digits"))?;
                out.push(v);
                i += 2;
            }
            other => return Err(format!("'{s}': unknown escape \\{}", other as char)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_stays_and_binary_round_trips() {
        assert_eq!(escape(b"hello world"), "hello world");
        assert_eq!(escape(b"a\"b\\c\n\x00\xff"), "a\\\"b\\\\c\\n\\0\\xFF");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert_eq!(unescape("\\x41\\x62").unwrap(), b"Ab");
    }

    #[test]
    fn malformed_escapes_are_errors() {
        assert!(unescape("abc\\").is_err());
        assert!(unescape("\\xZZ").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\q").is_err());
    }
}
