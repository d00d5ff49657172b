//! Credentials asked for on every connect: for rotating passwords and
//! cloud IAM tokens.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::Error;

/// A future that lives on one executor (it need not be `Send`).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A user name and password for `HELLO ... AUTH` / `AUTH`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// ACL user name; `None` authenticates the `default` user.
    pub username: Option<String>,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Yields credentials on every connect and reconnect.
///
/// The provider is shared by every core (`Send + Sync`), but the future it
/// returns runs on the connecting core's executor and need not be `Send`.
/// An error from it fails that connection attempt; a reconnecting
/// connection backs off and asks again.
///
/// ```
/// use redcore::auth::{CredentialProvider, Credentials, LocalBoxFuture};
///
/// struct Rotating;
/// impl CredentialProvider for Rotating {
///     fn credentials(&self) -> LocalBoxFuture<'_, redcore::Result<Credentials>> {
///         Box::pin(async {
///             Ok(Credentials { username: Some("app".into()), password: "token".into() })
///         })
///     }
/// }
/// ```
pub trait CredentialProvider: Send + Sync + 'static {
    /// Returns the credentials to use now.
    fn credentials(&self) -> LocalBoxFuture<'_, Result<Credentials, Error>>;
}
