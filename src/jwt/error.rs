use std::fmt;

use crate::reject::Reason;
use http::{HeaderValue, StatusCode};

use crate::crypto::Algorithm;
use crate::error::ConfigError;
use crate::token::{ExtractError, JwsError};

/// Why a request's token was refused. The value goes into the rejection response's
/// extensions so outer layers and logs can see why; it never holds the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// No token on a route that needs one.
    #[error("no bearer token")]
    Missing,
    /// The token came more than once, or in more than one place.
    #[error("the token was sent more than once")]
    Duplicate,
    /// An `Authorization: Bearer` header without exactly one token.
    #[error("malformed authorization header")]
    MalformedHeader,
    /// The request path cannot be normalised safely (with routes configured).
    #[error("malformed request path: {0}")]
    BadPath(crate::route::path::PathError),
    /// The token is longer than the cap.
    #[error("the token is longer than {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The token is not a well-formed, acceptable JWS.
    #[error("malformed token: {0}")]
    Malformed(JwsError),
    /// No configured issuer has the token's `iss`.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// The issuer does not allow the token's algorithm.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(Algorithm),
    /// The `typ` header is not the required one.
    #[error("unexpected token type")]
    WrongType,
    /// The token names a key id the issuer's key set does not have.
    #[error("unknown key id")]
    UnknownKid,
    /// The issuer has no key that may verify the token's algorithm.
    #[error("no key for the token's algorithm")]
    NoMatchingKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// `exp` minus `iat` (or `nbf`) exceeds the configured maximum lifetime.
    #[error("the token's lifetime is too long")]
    LifetimeTooLong,
    /// No audience of the token is accepted.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is missing.
    #[error("missing claim {0:?}")]
    MissingClaim(Box<str>),
    /// A claim has the wrong JSON type or is out of range.
    #[error("claim {0:?} has the wrong type or range")]
    InvalidClaim(Box<str>),
    /// The issuer's keys are not available.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
}

/// What the `WWW-Authenticate` challenge of a rejection says (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeKind {
    /// `Bearer realm="…"`, no error code: the request had no token.
    NoToken,
    /// `error="invalid_token"`.
    InvalidToken,
    /// `error="invalid_request"`.
    InvalidRequest,
    /// No challenge (a server-side failure).
    None,
}

impl JwtError {
    /// The status and challenge this error answers with; the one place that decides it.
    pub fn response_kind(&self) -> (StatusCode, ChallengeKind) {
        use JwtError::*;
        match self {
            Missing => (StatusCode::UNAUTHORIZED, ChallengeKind::NoToken),
            Duplicate | MalformedHeader => (StatusCode::BAD_REQUEST, ChallengeKind::InvalidRequest),
            BadPath(_) => (StatusCode::BAD_REQUEST, ChallengeKind::None),
            TooLarge { .. }
            | Malformed(_)
            | UnknownIssuer
            | AlgorithmNotAllowed(_)
            | WrongType
            | UnknownKid
            | NoMatchingKey
            | BadSignature
            | Expired
            | NotYetValid
            | IssuedInFuture
            | LifetimeTooLong
            | WrongAudience
            | MissingClaim(_)
            | InvalidClaim(_) => (StatusCode::UNAUTHORIZED, ChallengeKind::InvalidToken),
            KeysUnavailable => (StatusCode::SERVICE_UNAVAILABLE, ChallengeKind::None),
        }
    }

    /// A stable, machine-readable reason code for audit events and metrics.
    pub fn reason(&self) -> &'static str {
        use JwtError::*;
        let reason = match self {
            Missing => Reason::TokenMissing,
            Duplicate => Reason::TokenDuplicated,
            MalformedHeader => Reason::MalformedHeader,
            BadPath(error) => return error.reason(),
            TooLarge { .. } => Reason::TokenTooLarge,
            Malformed(JwsError::AlgNone) => Reason::AlgNone,
            Malformed(JwsError::UnsupportedAlgorithm) => Reason::UnsupportedAlgorithm,
            Malformed(JwsError::Crit) => Reason::CritUnsupported,
            Malformed(JwsError::UnencodedPayload) => Reason::UnencodedPayload,
            Malformed(JwsError::EmbeddedKey) => Reason::EmbeddedKey,
            Malformed(JwsError::Nested) => Reason::NestedToken,
            Malformed(_) => Reason::MalformedToken,
            UnknownIssuer => Reason::UnknownIssuer,
            AlgorithmNotAllowed(_) => Reason::AlgorithmNotAllowed,
            WrongType => Reason::WrongType,
            UnknownKid => Reason::UnknownKid,
            NoMatchingKey => Reason::NoMatchingKey,
            BadSignature => Reason::BadSignature,
            Expired => Reason::TokenExpired,
            NotYetValid => Reason::TokenNotYetValid,
            IssuedInFuture => Reason::IssuedInFuture,
            LifetimeTooLong => Reason::LifetimeTooLong,
            WrongAudience => Reason::WrongAudience,
            MissingClaim(_) => Reason::MissingClaim,
            InvalidClaim(_) => Reason::InvalidClaim,
            KeysUnavailable => Reason::KeysUnavailable,
        };
        reason.code()
    }
}

impl From<ExtractError> for JwtError {
    fn from(err: ExtractError) -> Self {
        match err {
            ExtractError::Duplicate => JwtError::Duplicate,
            ExtractError::MalformedHeader => JwtError::MalformedHeader,
            ExtractError::BadCharacters => JwtError::Malformed(JwsError::Base64),
            ExtractError::TooLarge { limit } => JwtError::TooLarge { limit },
        }
    }
}

impl From<JwsError> for JwtError {
    fn from(err: JwsError) -> Self {
        JwtError::Malformed(err)
    }
}

/// A realm goes inside a quoted string of a challenge: printable ASCII, no `"` or `\`.
pub(crate) fn check_realm(realm: &str) -> Result<(), ConfigError> {
    if realm
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return Err(ConfigError::InvalidHeader(
            "a realm must be printable ASCII without quotes or backslashes".into(),
        ));
    }
    Ok(())
}

/// The `WWW-Authenticate` values for one realm, built once.
#[derive(Clone)]
pub(crate) struct Challenges {
    no_token: HeaderValue,
    invalid_token: HeaderValue,
    invalid_request: HeaderValue,
}

impl fmt::Debug for Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("no_token", &self.no_token)
            .finish()
    }
}

impl Challenges {
    pub(crate) fn new(realm: &str) -> Result<Self, ConfigError> {
        check_realm(realm)?;
        let value = |rest: &str| {
            HeaderValue::try_from(format!("Bearer realm=\"{realm}\"{rest}"))
                .map_err(|e| ConfigError::InvalidHeader(e.to_string()))
        };
        Ok(Self {
            no_token: value("")?,
            invalid_token: value(
                ", error=\"invalid_token\", error_description=\"the access token is invalid\"",
            )?,
            invalid_request: value(
                ", error=\"invalid_request\", error_description=\"the request is malformed\"",
            )?,
        })
    }

    pub(crate) fn get(&self, kind: ChallengeKind) -> Option<&HeaderValue> {
        match kind {
            ChallengeKind::NoToken => Some(&self.no_token),
            ChallengeKind::InvalidToken => Some(&self.invalid_token),
            ChallengeKind::InvalidRequest => Some(&self.invalid_request),
            ChallengeKind::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_is_checked() {
        assert!(Challenges::new("api").is_ok());
        assert!(Challenges::new("a\"b").is_err());
        assert!(Challenges::new("a\nb").is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(
            JwtError::Missing.response_kind().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            JwtError::Duplicate.response_kind().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            JwtError::KeysUnavailable.response_kind().0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(JwtError::Malformed(JwsError::AlgNone).reason(), "alg_none");
    }
}
