//! wingkv's error codes and their mapping to gRPC statuses.
//!
//! Every error that crosses the wire is a `tonic::Status` whose message is the bare message (no
//! kind prefix), whose metadata `wingkv-error` carries the [`ErrorCode`] name, so clients get the
//! typed error back, and whose `wingkv-leader` carries the leader's address on `NotLeader`.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key that carries the [`ErrorCode`] name.
pub use wingkv_proto::ERROR_CODE_HEADER;
/// Metadata key that carries the leader's address on `NotLeader`.
pub const LEADER_HEADER: &str = "wingkv-leader";

/// The one table of wingkv's error kinds: each row names the kind, the gRPC code its status
/// carries, whether a client may retry it, and the prefix its message is shown with. The
/// [`ErrorCode`] list, the [`WingError`] variants, the gRPC mapping and the parsing all come from
/// it. `NotLeader` carries a leader hint besides its message and is written out by hand.
macro_rules! error_kinds {
    ($( $(#[doc = $doc:literal])* $kind:ident => $grpc:ident, retry: $retry:literal, $prefix:literal; )*) => {
        /// The kinds of error wingkv answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            /// The request reached a replica that is not the primary.
            NotLeader,
            $( $(#[doc = $doc])* $kind, )*
        }

        impl ErrorCode {
            /// Every kind, in table order.
            pub const ALL: &'static [ErrorCode] = &[ErrorCode::NotLeader, $(ErrorCode::$kind,)*];

            /// Name used on the wire (metadata [`ERROR_CODE_HEADER`]) and in messages.
            pub fn as_str(self) -> &'static str {
                match self {
                    ErrorCode::NotLeader => "NotLeader",
                    $( ErrorCode::$kind => stringify!($kind), )*
                }
            }

            /// The gRPC code a status of this kind carries.
            pub fn grpc_code(self) -> Code {
                match self {
                    ErrorCode::NotLeader => Code::FailedPrecondition,
                    $( ErrorCode::$kind => Code::$grpc, )*
                }
            }

            /// Whether a client may retry the same request (after refreshing its routing).
            pub fn is_retryable(self) -> bool {
                match self {
                    ErrorCode::NotLeader => true,
                    $( ErrorCode::$kind => $retry, )*
                }
            }

            /// What a message of this kind is prefixed with when shown to a person.
            fn prefix(self) -> &'static str {
                match self {
                    ErrorCode::NotLeader => "not the leader",
                    $( ErrorCode::$kind => $prefix, )*
                }
            }
        }

        /// A wingkv error with a message that names the problem. Its `Display` is the kind's
        /// prefix and the message; on the wire the message travels bare (see [`ErrorCode`]).
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum WingError {
            /// Not the primary; `leader` is the leader's address when known.
            NotLeader {
                /// The partition, printed `app.pidx`.
                partition: String,
                /// Address of the current leader, if known.
                leader: Option<String>,
            },
            $( $(#[doc = $doc])* $kind(String), )*
        }

        impl WingError {
            /// The kind of this error.
            pub fn code(&self) -> ErrorCode {
                match self {
                    WingError::NotLeader { .. } => ErrorCode::NotLeader,
                    $( WingError::$kind(_) => ErrorCode::$kind, )*
                }
            }

            /// The message without the kind's prefix (for `NotLeader`, the partition).
            pub fn message(&self) -> &str {
                match self {
                    WingError::NotLeader { partition, .. } => partition,
                    $( WingError::$kind(m) => m, )*
                }
            }

            /// Builds an error of `code` with `message` (`NotLeader` takes it as the partition and
            /// gets no leader).
            pub fn with_code(code: ErrorCode, message: String) -> Self {
                match code {
                    ErrorCode::NotLeader => WingError::NotLeader { partition: message, leader: None },
                    $( ErrorCode::$kind => WingError::$kind(message), )*
                }
            }
        }
    };
}

error_kinds! {
    /// The table, partition or replica does not exist here.
    NotFound => NotFound, retry: false, "not found";
    /// No table has this name (or id).
    TableNotFound => NotFound, retry: false, "table not found";
    /// The request is malformed or out of bounds.
    InvalidArgument => InvalidArgument, retry: false, "invalid argument";
    /// The thing to create exists already.
    AlreadyExists => AlreadyExists, retry: false, "already exists";
    /// The operation is not allowed in the current state.
    InvalidState => FailedPrecondition, retry: false, "invalid state";
    /// Throttled or overloaded; retry later.
    Busy => ResourceExhausted, retry: true, "busy";
    /// The replica server's disk is nearly full: the write was refused before it was proposed
    /// (not applied); reads are still served. Retryable once space is freed.
    DiskFull => ResourceExhausted, retry: true, "disk full";
    /// Writes or reads are denied by a table env.
    OperationDisabled => PermissionDenied, retry: false, "operation disabled";
    /// A secure cluster's peer (a user or a server, by its certificate) may not do this: the
    /// message names who, what and why (`admin_users`, a table's allowed users, a server role).
    PermissionDenied => PermissionDenied, retry: false, "permission denied";
    /// A secure server got no certificate: a plaintext connection, told that TLS is required.
    Unauthenticated => Unauthenticated, retry: false, "unauthenticated";
    /// The table was dropped.
    TableDropped => NotFound, retry: false, "table dropped";
    /// The key hashes to another partition than the one the request was sent to: the sender's
    /// routing is stale or wrong (the message names the right partition and the count).
    /// Retryable after the routing is refreshed; the request did nothing.
    WrongPartition => FailedPrecondition, retry: true, "wrong partition";
    /// Temporarily unable to serve (no quorum, shutting down, starting).
    Unavailable => Unavailable, retry: true, "unavailable";
    /// The deadline passed.
    Timeout => DeadlineExceeded, retry: true, "timeout";
    /// Stored data failed a check.
    Corruption => DataLoss, retry: false, "corruption";
    /// A storage engine error.
    Storage => Internal, retry: false, "storage error";
    /// An operating-system I/O error outside the storage engine (a socket that cannot be bound,
    /// a file that cannot be read).
    Io => Internal, retry: false, "I/O error";
    /// A configuration value is missing, malformed or out of range.
    Config => InvalidArgument, retry: false, "config error";
    /// Anything else.
    Internal => Internal, retry: false, "internal error";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorCode::ALL.iter().copied().find(|code| code.as_str() == s).ok_or(())
    }
}

impl fmt::Display for WingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WingError::NotLeader { partition, leader } => {
                write!(f, "{} of partition {partition}", ErrorCode::NotLeader.prefix())?;
                match leader {
                    Some(addr) => write!(f, "; the leader is {addr}"),
                    None => f.write_str("; the leader is unknown"),
                }
            }
            other => write!(f, "{}: {}", other.code().prefix(), other.message()),
        }
    }
}

impl std::error::Error for WingError {}

impl WingError {
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
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::Unavailable | Code::Cancelled | Code::Aborted => ErrorCode::Unavailable,
            Code::DeadlineExceeded => ErrorCode::Timeout,
            Code::DataLoss => ErrorCode::Corruption,
            _ => ErrorCode::Internal,
        });
        let message = status.message().to_string();
        match code {
            ErrorCode::NotLeader => WingError::NotLeader {
                partition: message,
                leader: status
                    .metadata()
                    .get(LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            },
            other => WingError::with_code(other, message),
        }
    }
}

impl From<WingError> for Status {
    fn from(err: WingError) -> Self {
        let code = err.code();
        // The bare message: the code travels in the metadata, and the client adds the prefix.
        let mut status = Status::new(code.grpc_code(), err.message().to_string());
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

/// One request's error in a `Batch` stream: what its status would carry as a unary call.
impl From<&WingError> for wingkv_proto::data::BatchError {
    fn from(err: &WingError) -> Self {
        Self {
            code: err.code().as_str().to_string(),
            message: err.message().to_string(),
            leader: err.leader().unwrap_or_default().to_string(),
        }
    }
}

/// The status a unary call would have answered for the batched request that got `err`, so a
/// client handles both answers alike (the wingkv code in the metadata marks it as the server's
/// own answer). A code this client does not know reads as `Internal`.
pub fn batch_error_status(err: &wingkv_proto::data::BatchError) -> Status {
    let code = err.code.parse::<ErrorCode>().unwrap_or(ErrorCode::Internal);
    let mut status = Status::new(code.grpc_code(), err.message.clone());
    let md = status.metadata_mut();
    md.insert(ERROR_CODE_HEADER, MetadataValue::from_static(code.as_str()));
    if !err.leader.is_empty() {
        if let Ok(v) = MetadataValue::try_from(err.leader.as_str()) {
            md.insert(LEADER_HEADER, v);
        }
    }
    status
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
    fn a_batched_error_reads_back_as_the_unary_status_would() {
        for err in [
            WingError::NotLeader { partition: "1.2".into(), leader: Some("127.0.0.1:5".into()) },
            WingError::NotLeader { partition: "1.2".into(), leader: None },
            WingError::Busy("throttled".into()),
            WingError::WrongPartition("1.3".into()),
        ] {
            let batched = wingkv_proto::data::BatchError::from(&err);
            let status = batch_error_status(&batched);
            assert_eq!(WingError::from_status(&status), err);
            assert!(status.metadata().contains_key(ERROR_CODE_HEADER));
        }
        // A code this client does not know reads as Internal, not as a retryable error.
        let unknown =
            wingkv_proto::data::BatchError { code: "Sideways".into(), message: "m".into(), leader: String::new() };
        assert_eq!(WingError::from_status(&batch_error_status(&unknown)).code(), ErrorCode::Internal);
    }

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
        assert_eq!(status.message(), "throttled", "the wire carries the bare message");
    }

    #[test]
    fn every_code_round_trips_through_a_status() {
        for &code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            let err = WingError::with_code(code, "the message".into());
            assert_eq!(err.code(), code);
            let back = WingError::from_status(&Status::from(err.clone()));
            assert_eq!(back.code(), code, "{code}");
            assert_eq!(back.message(), "the message", "{code}");
            assert_eq!(back.to_string(), err.to_string(), "{code}: no doubled prefix");
        }
        assert!("Nonsense".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn foreign_statuses_map_by_grpc_code() {
        let back = WingError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(back.code(), ErrorCode::Unavailable);
        assert!(back.code().is_retryable());
        assert!(!ErrorCode::InvalidArgument.is_retryable());
    }
}
