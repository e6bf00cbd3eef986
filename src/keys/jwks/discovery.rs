//! OpenID Connect discovery and RFC 8414 metadata: where a key set is announced, and reading
//! its `jwks_uri` from the document.

use http::Uri;

use super::JwksError;
use super::url::check_url;

/// Where a discovered key set is announced.
pub(super) struct Discovery {
    /// The issuer the metadata must name.
    pub(super) issuer: String,
    /// The metadata document's URL.
    pub(super) metadata: Uri,
}

impl Discovery {
    /// The key set's URL from the metadata document `body` (fetched from `url`): the document
    /// must name exactly this issuer, and its `jwks_uri` must be a URL the options allow.
    pub(super) fn jwks_uri(
        &self,
        url: &str,
        body: &[u8],
        allow_http: bool,
    ) -> Result<Uri, JwksError> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let metadata: Metadata =
            serde_json::from_slice(body).map_err(|e| JwksError::Malformed {
                url: url.to_owned(),
                reason: format!(
                    "not a metadata document (line {} column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        if metadata.issuer != self.issuer {
            return Err(JwksError::IssuerMismatch {
                expected: self.issuer.clone(),
                found: metadata.issuer,
            });
        }
        check_url(&metadata.jwks_uri, allow_http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Discovery {
        Discovery {
            issuer: "https://login.example.com".into(),
            metadata: "https://login.example.com/.well-known/openid-configuration"
                .parse()
                .unwrap(),
        }
    }

    #[test]
    fn reads_the_jwks_uri_of_exactly_its_issuer() {
        let d = discovery();
        let url = d.metadata.to_string();
        let doc = br#"{"issuer":"https://login.example.com","jwks_uri":"https://login.example.com/keys"}"#;
        assert_eq!(
            d.jwks_uri(&url, doc, false).unwrap(),
            "https://login.example.com/keys"
        );
        let other = br#"{"issuer":"https://login.example.com/","jwks_uri":"https://x/keys"}"#;
        assert_eq!(
            d.jwks_uri(&url, other, false).unwrap_err().reason(),
            "issuer_mismatch"
        );
        let plain = br#"{"issuer":"https://login.example.com","jwks_uri":"http://x.example/keys"}"#;
        assert_eq!(
            d.jwks_uri(&url, plain, false).unwrap_err().reason(),
            "insecure_url"
        );
        assert!(d.jwks_uri(&url, plain, true).is_ok());
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"not json",
            br#"{"issuer":"https://login.example.com"}"#,
        ] {
            assert_eq!(
                d.jwks_uri(&url, bad, false).unwrap_err().reason(),
                "malformed"
            );
        }
    }
}
