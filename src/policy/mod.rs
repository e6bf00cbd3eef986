//! The policy file (feature `policy`): one TOML document that describes the whole stack —
//! token sources, issuers and their keys, routes and rules, rate limits, identity headers, the
//! signed assertion and propagation — checked completely when it is read, and built into one
//! [`PolicyLayer`] in the documented order (propagate, authenticate, authorize, map claims,
//! rate limit). [`PolicyHandle`] swaps a running policy for a new one atomically.
//!
//! The keys and their defaults are in [the policy guide](crate::guide::policy).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis::policy::PolicyError> {
//! use portcullis::policy::Policy;
//!
//! let policy = Policy::from_toml(r#"
//!     [[issuers]]
//!     issuer = "https://login.example.com/"
//!     audiences = ["orders-api"]
//!     keys = { pem_files = ["tests/keys/p256.pub.pem"] }
//!
//!     [[routes]]
//!     path = "/health"
//!     auth = "none"
//!
//!     [[rate_limits]]
//!     name = "default"
//!     key = "claim:sub"
//!     rate = "100/min"
//! "#)?;
//! let layer = policy.build().await?;
//! # let _ = layer;
//!
//! let error = Policy::from_toml("[[routes]]\npath = \"/a\"\nscope_all = [\"x\"]\n").unwrap_err();
//! assert!(error.to_string().contains("line 3, column 1"), "{error}");
//! # Ok(()) }
//! ```

mod build;
mod file;
mod reload;
mod stack;

use std::fmt;
use std::path::{Path, PathBuf};

pub use build::PolicyLayer;
pub use reload::{PolicyHandle, ReloadLayer, Reloading};
pub use stack::{PolicyService, ResponseFuture};

use file::PolicyFile;

/// Why a policy was refused. Its message says where (file, line and column) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong form.
    #[error("{origin}{message}")]
    Syntax {
        /// `FILE: ` when read from a file.
        origin: String,
        /// The parser's message, with line, column and the offending text.
        message: String,
    },
    /// A value that is well-formed but not acceptable (a key of the wrong kind, an algorithm
    /// its keys cannot verify, a rate limit no route uses).
    #[error("{origin}line {line}, column {column}: {message}")]
    Invalid {
        /// `FILE: ` when read from a file.
        origin: String,
        /// The line (from 1).
        line: usize,
        /// The column (from 1).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Building the stack failed: a key set could not be fetched, Redis could not be reached.
    #[error("{0}")]
    Build(String),
}

/// The `[server]` section of a policy (see [`Policy::server`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSettings {
    /// `header_read_timeout`: how long a connection may take, from when it waits for a request
    /// (new, or kept alive after the last one) until that request's whole header has arrived.
    pub header_read_timeout: Option<std::time::Duration>,
    /// `idle_timeout`: how long a connection may go without a byte read or written.
    pub idle_timeout: Option<std::time::Duration>,
    /// `max_connections`: connections served at once; more wait to be accepted.
    pub max_connections: Option<u32>,
    /// `max_header_bytes`: the request line and header together, at most.
    pub max_header_bytes: Option<u32>,
    /// `underscore_headers = "keep"` (`Some(true)`) or `"drop"` (`Some(false)`): whether client
    /// headers whose names hold `_` reach the upstream.
    pub keep_underscore_headers: Option<bool>,
    /// `workers`: threads serving requests, each with its own runtime and connections.
    pub workers: Option<u32>,
}

/// A checked policy, ready to [`build`](Policy::build).
#[derive(Clone)]
pub struct Policy {
    file: PolicyFile,
    resolved: build::Resolved,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("upstream", &self.file.upstream)
            .field("listen", &self.file.listen)
            .field("issuers", &self.file.issuers.len())
            .field("routes", &self.file.routes.len())
            .field("rate_limits", &self.file.rate_limits.len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Reads and checks a policy file. Relative paths in it (`jwks_file`, `pem_files`,
    /// `key_file`, …) are relative to the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_file_text(path, &text)
    }

    /// Checks `text`, read from the file at `path` (for relative paths and messages).
    pub(crate) fn from_file_text(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(text, base, &format!("{}: ", path.display()))
    }

    /// Checks a policy given as text; relative paths are relative to the current folder. Also
    /// `text.parse::<Policy>()`.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        Self::parse(text, PathBuf::new(), "")
    }

    fn parse(text: &str, base: PathBuf, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let at = Locator { text, origin };
        let resolved = build::resolve(&file, &base, &at)?;
        Ok(Self { file, resolved })
    }

    /// The upstream URL (`upstream`), for a proxy such as the gateway example.
    pub fn upstream(&self) -> Option<&str> {
        self.file.upstream.as_deref()
    }

    /// The address to listen on (`listen`), for a proxy such as the gateway example.
    pub fn listen(&self) -> Option<&str> {
        self.file.listen.as_deref()
    }

    /// The `[server]` section: how a server built on the policy (the gateway example) treats
    /// its connections. The library's layers do not read it; what is not set is `None`, for
    /// the server's own default.
    pub fn server(&self) -> ServerSettings {
        let section = &self.file.server;
        ServerSettings {
            header_read_timeout: section.header_read_timeout.as_ref().map(|d| d.0),
            idle_timeout: section.idle_timeout.as_ref().map(|d| d.0),
            max_connections: section.max_connections.map(|n| n.get()),
            max_header_bytes: section.max_header_bytes.map(|n| n.get()),
            keep_underscore_headers: section.underscore_headers.map(|u| u.0),
            workers: section.workers.map(|n| n.get()),
        }
    }

    /// Builds the stack: fetches remote key sets and connects to Redis where the policy says
    /// so, then assembles the layers in order.
    pub async fn build(&self) -> Result<PolicyLayer, PolicyError> {
        build::build(self, None).await
    }

    /// Builds the stack, reusing from `previous` the parts whose configuration did not change:
    /// the validator (with its verified-token cache and remote key sets) when the token sources
    /// and issuers are the same, and each rate limit's state when its section is the same.
    pub async fn build_reusing(&self, previous: &PolicyLayer) -> Result<PolicyLayer, PolicyError> {
        build::build(self, Some(previous)).await
    }
}

impl std::str::FromStr for Policy {
    type Err = PolicyError;

    /// [`Policy::from_toml`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_toml(text)
    }
}

/// Turns a byte offset in the policy text into a line and column for messages.
pub(crate) struct Locator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Locator<'_> {
    pub(crate) fn error(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> PolicyError {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        PolicyError::Invalid {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}
