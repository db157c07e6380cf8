//! wingkv's error codes and their mapping to gRPC statuses.
//!
//! Every error that crosses the wire is a `tonic::Status` whose metadata `wingkv-error` carries
//! the [`ErrorCode`] name, so clients get the typed error back, and `wingkv-leader` carries the
//! leader's address on `NotLeader`.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key that carries the [`ErrorCode`] name.
pub const ERROR_CODE_HEADER: &str = "wingkv-error";
/// Metadata key that carries the leader's address on `NotLeader`.
pub const LEADER_HEADER: &str = "wingkv-leader";

/// The kinds of error wingkv answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request reached a replica that is not the primary.
    NotLeader,
    /// The table, partition or replica does not exist here.
    NotFound,
    /// No table has this name (or id).
    TableNotFound,
    /// The request is malformed or out of bounds.
    InvalidArgument,
    /// The thing to create exists already.
    AlreadyExists,
    /// The operation is not allowed in the current state.
    InvalidState,
    /// Throttled; retry later.
    Busy,
    /// Writes or reads are denied by a table env.
    OperationDisabled,
    /// The table was dropped.
    TableDropped,
    /// Temporarily unable to serve (no quorum, shutting down, starting).
    Unavailable,
    /// The deadline passed.
    Timeout,
    /// Stored data failed a check.
    Corruption,
    /// A storage engine error.
    Storage,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// Name used on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLeader => "NotLeader",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::TableNotFound => "TableNotFound",
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::AlreadyExists => "AlreadyExists",
            ErrorCode::InvalidState => "InvalidState",
            ErrorCode::Busy => "Busy",
            ErrorCode::OperationDisabled => "OperationDisabled",
            ErrorCode::TableDropped => "TableDropped",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::Corruption => "Corruption",
            ErrorCode::Storage => "Storage",
            ErrorCode::Internal => "Internal",
        }
    }

    /// The gRPC code a status of this kind carries.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorCode::NotLeader => Code::FailedPrecondition,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::TableNotFound => Code::NotFound,
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::InvalidState => Code::FailedPrecondition,
            ErrorCode::Busy => Code::ResourceExhausted,
            ErrorCode::OperationDisabled => Code::PermissionDenied,
            ErrorCode::TableDropped => Code::NotFound,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::Timeout => Code::DeadlineExceeded,
            ErrorCode::Corruption => Code::DataLoss,
            ErrorCode::Storage => Code::Internal,
            ErrorCode::Internal => Code::Internal,
        }
    }

    /// Whether a client may retry the same request (after refreshing its routing).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::NotLeader | ErrorCode::Busy | ErrorCode::Unavailable | ErrorCode::Timeout)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "NotLeader" => ErrorCode::NotLeader,
            "NotFound" => ErrorCode::NotFound,
            "TableNotFound" => ErrorCode::TableNotFound,
            "InvalidArgument" => ErrorCode::InvalidArgument,
            "AlreadyExists" => ErrorCode::AlreadyExists,
            "InvalidState" => ErrorCode::InvalidState,
            "Busy" => ErrorCode::Busy,
            "OperationDisabled" => ErrorCode::OperationDisabled,
            "TableDropped" => ErrorCode::TableDropped,
            "Unavailable" => ErrorCode::Unavailable,
            "Timeout" => ErrorCode::Timeout,
            "Corruption" => ErrorCode::Corruption,
            "Storage" => ErrorCode::Storage,
            "Internal" => ErrorCode::Internal,
            _ => return Err(()),
        })
    }
}

/// A wingkv error with a message that names the problem.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WingError {
    /// Not the primary; `leader` is the leader's address when known.
    #[error("not the leader of partition {partition}{}", leader_hint(.leader))]
    NotLeader {
        /// The partition, printed `app.pidx`.
        partition: String,
        /// Address of the current leader, if known.
        leader: Option<String>,
    },
    /// See [`ErrorCode::NotFound`].
    #[error("not found: {0}")]
    NotFound(String),
    /// See [`ErrorCode::TableNotFound`].
    #[error("table not found: {0}")]
    TableNotFound(String),
    /// See [`ErrorCode::InvalidArgument`].
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// See [`ErrorCode::AlreadyExists`].
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// See [`ErrorCode::InvalidState`].
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// See [`ErrorCode::Busy`].
    #[error("busy: {0}")]
    Busy(String),
    /// See [`ErrorCode::OperationDisabled`].
    #[error("operation disabled: {0}")]
    OperationDisabled(String),
    /// See [`ErrorCode::TableDropped`].
    #[error("table dropped: {0}")]
    TableDropped(String),
    /// See [`ErrorCode::Unavailable`].
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// See [`ErrorCode::Timeout`].
    #[error("timeout: {0}")]
    Timeout(String),
    /// See [`ErrorCode::Corruption`].
    #[error("corruption: {0}")]
    Corruption(String),
    /// See [`ErrorCode::Storage`].
    #[error("storage error: {0}")]
    Storage(String),
    /// See [`ErrorCode::Internal`].
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(leader: &Option<String>) -> String {
    match leader {
        Some(addr) => format!("; the leader is {addr}"),
        None => "; the leader is unknown".to_string(),
    }
}

impl WingError {
    /// The kind of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WingError::NotLeader { .. } => ErrorCode::NotLeader,
            WingError::NotFound(_) => ErrorCode::NotFound,
            WingError::TableNotFound(_) => ErrorCode::TableNotFound,
            WingError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            WingError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            WingError::InvalidState(_) => ErrorCode::InvalidState,
            WingError::Busy(_) => ErrorCode::Busy,
            WingError::OperationDisabled(_) => ErrorCode::OperationDisabled,
            WingError::TableDropped(_) => ErrorCode::TableDropped,
            WingError::Unavailable(_) => ErrorCode::Unavailable,
            WingError::Timeout(_) => ErrorCode::Timeout,
            WingError::Corruption(_) => ErrorCode::Corruption,
            WingError::Storage(_) => ErrorCode::Storage,
            WingError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The leader address carried by a `NotLeader` error.
    pub fn leader(&self) -> Option<&str> {
        match self {
            WingError::NotLeader { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }

    /// Rebuilds the error from a status answered by a wingkv server; statuses without the
    /// wingkv code (transport failures, foreign servers) map by their gRPC code.
    pub fn from_status(status: &Status) -> Self {
        let msg = status.message().to_string();
        let code = status
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<ErrorCode>().ok());
        let code = code.unwrap_or(match status.code() {
            Code::NotFound => ErrorCode::NotFound,
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::AlreadyExists => ErrorCode::AlreadyExists,
            Code::FailedPrecondition => ErrorCode::InvalidState,
            Code::ResourceExhausted => ErrorCode::Busy,
            Code::PermissionDenied => ErrorCode::OperationDisabled,
            Code::Unavailable | Code::Cancelled | Code::Aborted => ErrorCode::Unavailable,
            Code::DeadlineExceeded => ErrorCode::Timeout,
            Code::DataLoss => ErrorCode::Corruption,
            _ => ErrorCode::Internal,
        });
        match code {
            ErrorCode::NotLeader => WingError::NotLeader {
                partition: String::new(),
                leader: status
                    .metadata()
                    .get(LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            },
            other => {
                // The message is this error's Display; keep only what follows its prefix.
                let prefix = WingError::with_code(other, String::new()).to_string();
                let inner = msg.strip_prefix(prefix.as_str()).map(str::to_string).unwrap_or(msg);
                WingError::with_code(other, inner)
            }
        }
    }

    /// Builds an error of `code` with `message` (NotLeader gets no leader).
    pub fn with_code(code: ErrorCode, message: String) -> Self {
        match code {
            ErrorCode::NotLeader => WingError::NotLeader { partition: message, leader: None },
            ErrorCode::NotFound => WingError::NotFound(message),
            ErrorCode::TableNotFound => WingError::TableNotFound(message),
            ErrorCode::InvalidArgument => WingError::InvalidArgument(message),
            ErrorCode::AlreadyExists => WingError::AlreadyExists(message),
            ErrorCode::InvalidState => WingError::InvalidState(message),
            ErrorCode::Busy => WingError::Busy(message),
            ErrorCode::OperationDisabled => WingError::OperationDisabled(message),
            ErrorCode::TableDropped => WingError::TableDropped(message),
            ErrorCode::Unavailable => WingError::Unavailable(message),
            ErrorCode::Timeout => WingError::Timeout(message),
            ErrorCode::Corruption => WingError::Corruption(message),
            ErrorCode::Storage => WingError::Storage(message),
            ErrorCode::Internal => WingError::Internal(message),
        }
    }
}

impl From<WingError> for Status {
    fn from(err: WingError) -> Self {
        let code = err.code();
        let mut status = Status::new(code.grpc_code(), err.to_string());
        let md = status.metadata_mut();
        md.insert(ERROR_CODE_HEADER, MetadataValue::from_static(code.as_str()));
        if let Some(leader) = err.leader() {
            if let Ok(v) = MetadataValue::try_from(leader) {
                md.insert(LEADER_HEADER, v);
            }
        }
        status
    }
}

#[cfg(feature = "storage")]
impl From<rocksdb::Error> for WingError {
    fn from(e: rocksdb::Error) -> Self {
        WingError::Storage(e.into_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_code_and_leader() {
        let err = WingError::NotLeader { partition: "1.2".into(), leader: Some("127.0.0.1:5".into()) };
        let status: Status = err.clone().into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        let back = WingError::from_status(&status);
        assert_eq!(back.code(), ErrorCode::NotLeader);
        assert_eq!(back.leader(), Some("127.0.0.1:5"));

        let status: Status = WingError::Busy("throttled".into()).into();
        let back = WingError::from_status(&status);
        assert_eq!(back, WingError::Busy("throttled".into()));
        assert_eq!(back.to_string(), "busy: throttled");
    }

    #[test]
    fn foreign_statuses_map_by_grpc_code() {
        let back = WingError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(back.code(), ErrorCode::Unavailable);
        assert!(back.code().is_retryable());
        assert!(!ErrorCode::InvalidArgument.is_retryable());
    }
}
