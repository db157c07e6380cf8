//! Splitting a shell line into commands (`;`) and words, with `"…"` and `'…'` quoting.
//! Backslash escapes are kept for [`super::escape::unescape`], so `"a\x00b"` reaches the
//! command as the four characters `a\x00b` plus the `b`, and binary values survive quoting.

/// Splits `line` at `;` outside quotes.
pub fn split_commands(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                cur.push(c);
            }
            (c, Some(q)) if c == q => {
                quote = None;
                cur.push(c);
            }
            (';', None) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    out.push(cur);
    Ok(out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Splits one command into words; quotes group words and are removed.
pub fn split_words(cmd: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                in_word = true;
                cur.push('\\');
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err("a command ends with a lone backslash".into()),
                }
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_words() {
        assert_eq!(
            split_commands("use t; set a b \"c;d\" ;get a b").unwrap(),
            vec!["use t", "set a b \"c;d\"", "get a b"]
        );
        assert_eq!(split_words("set a 'b c' \"\" x\\x00y").unwrap(), vec!["set", "a", "b c", "", "x\\x00y"]);
        assert!(split_words("set \"a").is_err());
        assert!(split_commands("set 'a").is_err());
    }
}
