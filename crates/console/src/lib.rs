//! The web console's shell, shared by every service that has pages.
//!
//! Each service renders the pages of the data it owns (the catalog the Image Library, the
//! Model Library, repository detail and the activity; registry-registry Manage
//! Repositories; serving-deployer the deployments), on its own listener and in
//! `imagelib serve`, where they all share one. What they must agree on lives here: who is
//! signed in (a signed cookie naming the hash of an API token, so every service reads the
//! same session and a token removed from the store ends its sessions), the CSRF token
//! every form carries, the strict Content-Security-Policy (no inline script or style), the
//! layout and navigation, and the stylesheet and script, embedded in the binary under
//! names that change with their content.
//!
//! Pages are written with `maud`: templates are Rust, checked when compiled, and every
//! interpolated value is escaped — repository names, labels and READMEs come from
//! registries, which are untrusted.

pub mod assets;
pub mod layout;
pub mod session;
mod shell;

use std::sync::Arc;

use imagelib_platform::auth::{Tokens, TokensError};
use imagelib_platform::config::CommonConfig;

pub use layout::{Nav, page, page_with_status};
pub use maud::{Markup, PreEscaped, html};
pub use session::{CsrfForm, Viewer};
pub use shell::{pages, service};

/// What the console's extractors need: the token store, the session key and settings.
/// Added to a service's page router as an `Extension` by [`pages`].
#[derive(Clone)]
pub struct Console {
    key: Arc<[u8; 32]>,
    tokens: Tokens,
    ttl_secs: u64,
    secure_cookie: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("ttl_secs", &self.ttl_secs)
            .field("secure_cookie", &self.secure_cookie)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// From the common configuration (tokens, `IMAGELIB_CONSOLE__*`).
    pub fn from_config(c: &CommonConfig) -> Result<Self, TokensError> {
        let tokens = Tokens::from_config(c)?;
        Ok(Self::new(
            tokens,
            c.console.session_key.as_deref(),
            c.console.session_ttl_secs,
            c.console.secure_cookie,
        ))
    }

    /// A console over `tokens`. Without a session key, one random key per process, so
    /// the services of one `imagelib serve` share their sessions.
    pub fn new(
        tokens: Tokens,
        session_key: Option<&str>,
        ttl_secs: u64,
        secure_cookie: bool,
    ) -> Self {
        use sha2::Digest;
        let key: [u8; 32] = match session_key {
            Some(k) => sha2::Sha256::new()
                .chain_update(b"imagelib-console-session-v1\0")
                .chain_update(k.as_bytes())
                .finalize()
                .into(),
            None => *process_key(),
        };
        Console {
            key: Arc::new(key),
            tokens,
            ttl_secs,
            secure_cookie,
        }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

fn process_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(rand::random)
}
