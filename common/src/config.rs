//! Typed configuration loaded from TOML, with defaults for every field.

use std::path::Path;

use serde::de::DeserializeOwned;

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
