//! Who a certificate says its holder is.
//!
//! A server certificate carries its role as a URI subject alternative name
//! (`urn:wingkv:role:meta` or `urn:wingkv:role:replica`) and its name as the common name; a user
//! certificate has no role, and its common name is the user name. Only the cluster's CA issues
//! either, so a role cannot be claimed by a user.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The prefix of the role URI of a server certificate.
pub const ROLE_URI_PREFIX: &str = "urn:wingkv:role:";

/// What a server is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A meta server.
    Meta,
    /// A replica server.
    Replica,
}

impl Role {
    /// The role's name in its URI and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Meta => "meta",
            Role::Replica => "replica",
        }
    }

    /// The role of `name` (`meta` or `replica`).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "meta" => Some(Role::Meta),
            "replica" => Some(Role::Replica),
            _ => None,
        }
    }
}

/// The holder of a certificate of the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A server of `role`, named `name`.
    Server {
        /// Its role.
        role: Role,
        /// The certificate's common name.
        name: String,
    },
    /// A user (a client certificate without a role).
    User(String),
}

impl Identity {
    /// The identity a (verified) certificate in DER states.
    pub fn from_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable peer certificate: {e}"))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
            .ok_or("the peer certificate has no common name")?;
        let mut roles = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = n {
                    if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
                        roles.push(Role::parse(role).ok_or_else(|| format!("unknown role '{role}' in {uri}"))?);
                    }
                }
            }
        }
        match roles.as_slice() {
            [] => Ok(Identity::User(name)),
            [role] => Ok(Identity::Server { role: *role, name }),
            _ => Err(format!("certificate '{name}' names more than one role")),
        }
    }

    /// The user name, for a user.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::User(u) => Some(u),
            Identity::Server { .. } => None,
        }
    }

    /// The role, for a server.
    pub fn role(&self) -> Option<Role> {
        match self {
            Identity::Server { role, .. } => Some(*role),
            Identity::User(_) => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Server { role, name } => write!(f, "{} server '{name}'", role.as_str()),
            Identity::User(u) => write!(f, "user '{u}'"),
        }
    }
}

/// What a server knows of the peer of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The server runs without TLS: nobody is authenticated and nothing is checked.
    Unsecured,
    /// A plaintext connection to a server that requires TLS: every request is refused.
    Plaintext,
    /// A TLS connection with a certificate of the cluster's CA.
    Certified(Arc<Identity>),
}

/// The connection info tonic attaches to every request of a connection (its extensions).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The remote address.
    pub remote: Option<SocketAddr>,
    /// Who the peer is.
    pub peer: Peer,
}

/// The peer of request `req`: [`Peer::Unsecured`] when the server attached none (a server
/// without TLS, or a test calling a service directly).
pub fn peer_of<T>(req: &tonic::Request<T>) -> Peer {
    req.extensions().get::<PeerInfo>().map(|i| i.peer.clone()).unwrap_or(Peer::Unsecured)
}

/// The peer of an HTTP request (what a tower layer sees).
pub fn peer_of_http<B>(req: &http::Request<B>) -> Peer {
    req.extensions().get::<PeerInfo>().map(|i| i.peer.clone()).unwrap_or(Peer::Unsecured)
}
