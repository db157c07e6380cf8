//! Authorization by gRPC method and peer identity, as a tower layer in front of a server's
//! services: on a secure server, a plaintext connection is told it needs TLS, and a certified
//! peer calls only what the server's [`Policy`] lets it. Each refusal names the identity, the
//! method and the reason, and is counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::identity::{peer_of_http, Identity, Peer};

/// The message a plaintext client of a secure server gets.
pub const REQUIRES_TLS: &str = "this server requires TLS: connect with a certificate of the cluster's CA \
     (the shell and bench take --tls-ca, --tls-cert and --tls-key; the SDK takes ClientConfig::tls)";

/// Who may call what on one server.
pub trait Policy: Send + Sync + 'static {
    /// `Ok` when `identity` may call `method` (the gRPC path, `/package.Service/Method`), else
    /// why not.
    fn check(&self, method: &str, identity: &Identity) -> Result<(), String>;
}

/// Counts of the requests a server refused.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Requests on plaintext connections to a secure server.
    pub plaintext: AtomicU64,
    /// Requests of a certified peer its policy does not allow.
    pub denied: AtomicU64,
}

/// The layer; without a policy (a server without TLS) it lets everything through.
#[derive(Clone)]
pub struct AuthorizeLayer {
    policy: Option<Arc<dyn Policy>>,
    refusals: Arc<Refusals>,
}

impl AuthorizeLayer {
    /// Authorizes by `policy` on a secure server; `None` on a server without TLS.
    pub fn new(policy: Option<Arc<dyn Policy>>, refusals: Arc<Refusals>) -> Self {
        Self { policy, refusals }
    }

    /// Ok, or the status that refuses a request on `method` from `peer`.
    fn decide(&self, method: &str, peer: &Peer) -> Result<(), tonic::Status> {
        let Some(policy) = &self.policy else { return Ok(()) };
        match peer {
            Peer::Certified(identity) => policy.check(method, identity).map_err(|why| {
                self.refusals.denied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%identity, method, "request refused: {why}");
                coded(
                    tonic::Status::permission_denied(format!("{identity} may not call {method}: {why}")),
                    "PermissionDenied",
                )
            }),
            // `Unsecured` on a secure server: the connection came without its peer (never from
            // this crate's `incoming`); refused rather than trusted.
            Peer::Plaintext | Peer::Unsecured => {
                self.refusals.plaintext.fetch_add(1, Ordering::Relaxed);
                Err(coded(tonic::Status::unauthenticated(REQUIRES_TLS), "Unauthenticated"))
            }
        }
    }
}

/// `status` with its wingkv error code, as every wingkv error carries it (the request did
/// nothing: refused before any service saw it).
fn coded(mut status: tonic::Status, code: &'static str) -> tonic::Status {
    status.metadata_mut().insert(wingkv_proto::ERROR_CODE_HEADER, tonic::metadata::MetadataValue::from_static(code));
    status
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner, layer: self.clone() }
    }
}

/// The service of [`AuthorizeLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.layer.decide(req.uri().path(), &peer_of_http(&req)) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    struct AdminsOnly;

    impl Policy for AdminsOnly {
        fn check(&self, _method: &str, identity: &Identity) -> Result<(), String> {
            match identity.user() {
                Some("admin") => Ok(()),
                _ => Err("only admin".into()),
            }
        }
    }

    #[test]
    fn a_secure_layer_refuses_plaintext_and_denied_peers_and_counts_them() {
        let refusals = Arc::new(Refusals::default());
        let layer = AuthorizeLayer::new(Some(Arc::new(AdminsOnly)), refusals.clone());
        let user = |u: &str| Peer::Certified(Arc::new(Identity::User(u.into())));
        assert!(layer.decide("/x.Y/Z", &user("admin")).is_ok());
        let denied = layer.decide("/x.Y/Z", &user("user1")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.metadata().get(wingkv_proto::ERROR_CODE_HEADER).unwrap(), "PermissionDenied");
        assert!(denied.message().contains("user 'user1' may not call /x.Y/Z: only admin"), "{denied:?}");
        let server = Peer::Certified(Arc::new(Identity::Server { role: Role::Replica, name: "n1".into() }));
        assert!(layer.decide("/x.Y/Z", &server).is_err());
        for p in [Peer::Plaintext, Peer::Unsecured] {
            let e = layer.decide("/x.Y/Z", &p).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(e.message().starts_with("this server requires TLS"));
        }
        assert_eq!(refusals.denied.load(Ordering::Relaxed), 2);
        assert_eq!(refusals.plaintext.load(Ordering::Relaxed), 2);
        // Without TLS nothing is checked.
        assert!(AuthorizeLayer::new(None, refusals).decide("/x.Y/Z", &Peer::Unsecured).is_ok());
    }
}
