//! `Cache-Control` as a key-set server sends it: how long its answer may be kept.

use std::time::Duration;

use http::HeaderValue;

/// `max-age` from a `Cache-Control` value; `no-cache`/`no-store` read as 0.
pub(super) fn max_age(value: Option<&HeaderValue>) -> Option<Duration> {
    let value = value?.to_str().ok()?;
    let mut found = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let Some((name, secs)) = directive.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("max-age") {
            found = secs
                .trim()
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        assert_eq!(
            max_age(v("public, max-age=600").as_ref()),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            max_age(v("MAX-AGE=\"60\"").as_ref()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(v("no-store").as_ref()), Some(Duration::ZERO));
        assert_eq!(max_age(v("max-age=x").as_ref()), None);
        assert_eq!(max_age(None), None);
    }
}
