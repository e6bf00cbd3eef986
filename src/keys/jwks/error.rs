//! Why a fetch or a discovery failed.

/// Why a fetch or a discovery failed. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The URL cannot be used.
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    /// A plain-HTTP URL to a host other than loopback, without `allow_http`.
    #[error("refusing plain HTTP to {0:?}: key sets must come over HTTPS")]
    InsecureUrl(String),
    /// The connection failed.
    #[error("cannot fetch {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server did not answer in time.
    #[error("fetching {0} timed out")]
    Timeout(String),
    /// The server answered with an error status.
    #[error("fetching {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body is larger than the cap.
    #[error("the response from {url} is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The body is not a usable document.
    #[error("the document from {url} is malformed: {reason}")]
    Malformed {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A discovery document names another issuer than the configured one.
    #[error("discovery document of {expected:?} names issuer {found:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's `issuer`.
        found: String,
    },
}

impl JwksError {
    /// A stable reason code for events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JwksError::InvalidUrl(_) => "invalid_url",
            JwksError::InsecureUrl(_) => "insecure_url",
            JwksError::Connect { .. } => "connect",
            JwksError::Timeout(_) => "timeout",
            JwksError::Status { .. } => "status",
            JwksError::TooLarge { .. } => "too_large",
            JwksError::Malformed { .. } => "malformed",
            JwksError::IssuerMismatch { .. } => "issuer_mismatch",
        }
    }
}
