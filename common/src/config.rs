//! Typed configuration loaded from TOML, with defaults for every field.

use std::fmt::Display;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::backoff::BackoffPolicy;

/// The longest timeout or period in milliseconds a server config may set: one day.
pub const MAX_MS: u64 = 24 * 3600 * 1000;

/// The longest grace or reserve period in seconds a server config may set: ten years.
pub const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its position.
        message: String,
    },
}

/// Loads a config of type `T` from a TOML file; fields the file omits take their defaults
/// (`T` uses `#[serde(default)]`). Unknown fields are errors when `T` denies them.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    parse_toml(&text).map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.display().to_string(), message },
        other => other,
    })
}

/// Parses a config of type `T` from TOML text (the error names no file: `path` is empty).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: String::new(), message: e.to_string() })
}

impl From<ConfigError> for crate::WingError {
    fn from(e: ConfigError) -> Self {
        crate::WingError::Config(e.to_string())
    }
}

/// A config value the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field} = {value}; allowed: {allowed}")]
pub struct InvalidConfig {
    /// The field as the TOML file names it (`node_timeout_ms`, `peers[1].id`, `raft.heartbeat_ms`).
    pub field: String,
    /// The value it has.
    pub value: String,
    /// The values it may take.
    pub allowed: String,
}

/// Fails naming `field` and `allowed` unless `ok`.
pub fn require(ok: bool, field: &str, value: impl Display, allowed: impl Display) -> Result<(), InvalidConfig> {
    if ok {
        return Ok(());
    }
    Err(InvalidConfig { field: field.to_string(), value: value.to_string(), allowed: allowed.to_string() })
}

/// Fails naming `field` unless `min <= value <= max`.
pub fn within<T: PartialOrd + Display>(field: &str, value: T, min: T, max: T) -> Result<(), InvalidConfig> {
    let allowed = format!("{min} to {max}");
    require(min <= value && value <= max, field, value, allowed)
}

/// Fails unless `policy` (at `field`) has a base of at least 1 ms and a cap between the base and
/// [`MAX_MS`].
pub fn check_backoff(field: &str, policy: &BackoffPolicy) -> Result<(), InvalidConfig> {
    within(&format!("{field}.base_ms"), policy.base_ms, 1, MAX_MS)?;
    let cap = format!("{field}.cap_ms");
    require(
        policy.base_ms <= policy.cap_ms && policy.cap_ms <= MAX_MS,
        &cap,
        policy.cap_ms,
        format!("{field}.base_ms ({}) to {MAX_MS}", policy.base_ms),
    )
}
