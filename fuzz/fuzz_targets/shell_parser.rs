//! The shell's line parser: splitting into commands and words, Pegasus escapes, and the
//! command grammar, on arbitrary input lines. The shell is a binary crate whose package also
//! links RocksDB (bulkgen), so its parser modules, which depend on nothing but clap, are
//! compiled in here directly.
#![no_main]

#[path = "../../shell/src/shell/commands.rs"]
#[allow(dead_code)]
mod commands;
#[path = "../../shell/src/shell/escape.rs"]
#[allow(dead_code)]
mod escape;
#[path = "../../shell/src/shell/tokenize.rs"]
#[allow(dead_code)]
mod tokenize;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Binary values round-trip through the printed form.
    assert_eq!(escape::unescape(&escape::escape(data)).as_deref(), Ok(data));
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(commands) = tokenize::split_commands(line) else { return };
    for cmd in commands {
        let Ok(words) = tokenize::split_words(&cmd) else { continue };
        for w in &words {
            let _ = escape::unescape(w);
        }
        if !words.is_empty() {
            let _ = commands::Line::try_parse_from(&words);
        }
    }
});
