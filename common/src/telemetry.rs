//! Tracing setup shared by every wingkv binary.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: filter from `RUST_LOG` (default `info`), plain text
/// or JSON lines on stderr (`json`, or `WINGKV_LOG_JSON=1` in the environment, which reaches
/// every server of a onebox). Safe to call twice (the second call does nothing).
pub fn init_tracing(json: bool) {
    let json = json || std::env::var("WINGKV_LOG_JSON").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
