//! Which URLs a key set or a discovery document may be fetched from.

use http::Uri;

use super::JwksError;

/// Checks a key-set or discovery URL: HTTPS, or plain HTTP to loopback (or anywhere, when
/// allowed).
pub(super) fn check_url(url: &str, allow_http: bool) -> Result<Uri, JwksError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| JwksError::InvalidUrl(url.to_owned()))?;
    let host = uri
        .host()
        .ok_or_else(|| JwksError::InvalidUrl(url.to_owned()))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost"
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback || allow_http {
                Ok(uri)
            } else {
                Err(JwksError::InsecureUrl(url.to_owned()))
            }
        }
        _ => Err(JwksError::InvalidUrl(url.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://login.example.com/keys", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/keys", false).is_ok());
        assert!(check_url("http://[::1]:8080/keys", false).is_ok());
        assert!(check_url("http://localhost/keys", false).is_ok());
        assert_eq!(
            check_url("http://login.example.com/keys", false)
                .unwrap_err()
                .reason(),
            "insecure_url"
        );
        assert!(check_url("http://login.example.com/keys", true).is_ok());
        assert!(check_url("ftp://x/keys", true).is_err());
        assert!(check_url("/keys", true).is_err());
    }
}
