//! The route table: routes (a method set, a path pattern, an authentication mode and a rule),
//! the one canonical reading of a request's method and path they are matched on, and the match
//! the layers of one stack share. Below every layer that reads a route (authentication reads its
//! mode, authorization its rule, rate limiting binds limits to it); the public items are
//! re-exported from [`authz`](crate::authz), where users meet them.
//!
//! A route's rule is data here; [`Route::allows`] (in `authz`) evaluates it on an identity.

pub mod path;

use std::fmt;
use std::sync::Arc;

use http::{HeaderValue, Method};
use serde_json::Value;

use path::{NormalizedPath, PathCase, PathError, PathParameters, PathPattern, PatternError};

use crate::claim_path::ClaimPath;

/// Whether a route needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// A valid token is needed (the default, and what unmatched routes get).
    #[default]
    Required,
    /// A token is checked if present; requests without one pass as anonymous.
    Optional,
    /// No token is looked at: a public route.
    None,
}

/// One route: a method set, a path pattern, an authentication mode and a rule.
#[derive(Clone)]
pub struct Route {
    pattern: PathPattern,
    methods: Box<[Method]>,
    auth: Auth,
    pub(crate) scopes_all: Box<[Box<str>]>,
    pub(crate) scopes_any: Box<[Box<str>]>,
    pub(crate) roles: Option<(ClaimPath, Box<[Box<str>]>)>,
    pub(crate) claims: Box<[(ClaimPath, Box<[Value]>)]>,
    challenge_scope: Option<HeaderValue>,
    /// The rate limits this route names (see [`Route::rate_limits`]).
    rate_limits: Box<[Box<str>]>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("pattern", &self.pattern)
            .field("methods", &self.methods)
            .field("auth", &self.auth)
            .field("scopes_all", &self.scopes_all)
            .field("scopes_any", &self.scopes_any)
            .field("roles", &self.roles)
            .field("claims", &self.claims)
            .finish()
    }
}

fn strings<I, S>(items: I) -> Box<[Box<str>]>
where
    I: IntoIterator<Item = S>,
    S: Into<Box<str>>,
{
    items.into_iter().map(Into::into).collect()
}

impl Route {
    /// A route for `pattern` (see [`PathPattern`]), any method, token required, no rule.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        Ok(Self {
            pattern: PathPattern::new(pattern)?,
            methods: Box::default(),
            auth: Auth::Required,
            scopes_all: Box::default(),
            scopes_any: Box::default(),
            roles: None,
            claims: Box::default(),
            challenge_scope: None,
            rate_limits: Box::default(),
        })
    }

    /// Restricts the route to these methods (default: any). A route with `GET` also matches
    /// `HEAD`, which servers answer with the `GET` handler.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The authentication mode.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Every one of these scopes is needed.
    pub fn scopes_all<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.scopes_all = strings(scopes);
        self.update_challenge();
        self
    }

    /// At least one of these scopes is needed.
    pub fn scopes_any<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.scopes_any = strings(scopes);
        self.update_challenge();
        self
    }

    /// At least one of these roles is needed, read at `path` (an array of strings, or one
    /// string), e.g. `realm_access.roles`.
    pub fn roles_any<I, S>(mut self, path: ClaimPath, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.roles = Some((path, strings(roles)));
        self
    }

    /// The claim at `path` must equal one of `allowed` (or, for an array claim, hold one). An
    /// allowed value that reads as a JSON number or boolean also matches that number or boolean.
    pub fn claim<I, S>(mut self, path: ClaimPath, allowed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut values = Vec::new();
        for value in allowed {
            let value = value.into();
            if let Ok(parsed @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str(&value) {
                values.push(parsed);
            }
            values.push(Value::String(value));
        }
        let mut claims = std::mem::take(&mut self.claims).into_vec();
        claims.push((path, values.into_boxed_slice()));
        self.claims = claims.into_boxed_slice();
        self
    }

    fn update_challenge(&mut self) {
        let scopes: Vec<&str> = self
            .scopes_all
            .iter()
            .chain(self.scopes_any.iter())
            .map(|s| &**s)
            .collect();
        // Scope tokens are visible ASCII without `"` or `\` (RFC 6749 §3.3); others are left out.
        let printable: Vec<&str> = scopes
            .into_iter()
            .filter(|s| {
                s.bytes()
                    .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
            })
            .collect();
        self.challenge_scope = HeaderValue::try_from(printable.join(" ")).ok();
    }

    /// The path pattern as written.
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    pub(crate) fn pattern_text(&self) -> &std::sync::Arc<str> {
        self.pattern.text()
    }

    /// The authentication mode.
    pub fn auth_mode(&self) -> Auth {
        self.auth
    }

    /// Names the rate limits that apply to this route: those of the layer's limits scoped
    /// [`Named`](crate::rate_limit::Scope::Named) or
    /// [`Default`](crate::rate_limit::Scope::Default) with these names. A route that names
    /// none gets the `Default`-scoped limits.
    ///
    /// ```
    /// use portcullis::authz::{Route, Routes};
    /// use portcullis::rate_limit::{Limit, Quota, RateLimitLayer, Scope};
    ///
    /// let routes = Routes::new([
    ///     Route::new("/search/**").unwrap().rate_limits(["search"]),
    ///     Route::new("/**").unwrap(),
    /// ]);
    /// let search = Limit::new("search", "claim:sub".parse().unwrap(), Quota::per_minute(10))
    ///     .unwrap()
    ///     .scope(Scope::Named);
    /// let everyone = Limit::per_client_ip(Quota::per_minute(600)).scope(Scope::Default);
    /// let layer = RateLimitLayer::new([search, everyone]).routes(routes);
    /// # let _ = layer;
    /// ```
    pub fn rate_limits<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.rate_limits = strings(names);
        self
    }

    /// The rate limits this route names.
    pub fn rate_limit_names(&self) -> &[Box<str>] {
        &self.rate_limits
    }

    /// Whether the route has a rule beyond authentication.
    pub fn has_rule(&self) -> bool {
        !(self.scopes_all.is_empty()
            && self.scopes_any.is_empty()
            && self.roles.is_none()
            && self.claims.is_empty())
    }

    /// Whether the route's method set holds `method`. `HEAD` counts as `GET`: servers and
    /// frameworks answer `HEAD` with the `GET` handler, so a rule on `GET` must not be skipped
    /// by it.
    fn has_method(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    fn matches(&self, method: &Method, path: &NormalizedPath<'_>, ignoring_case: bool) -> bool {
        self.has_method(method)
            && if ignoring_case {
                self.pattern.matches_ignoring_case(path)
            } else {
                self.pattern.matches(path)
            }
    }

    /// The `scope` attribute of a 403 challenge: the scopes the route names.
    pub(crate) fn challenge_scope(&self) -> Option<&HeaderValue> {
        self.challenge_scope.as_ref()
    }
}

/// Headers some frameworks read as the method to act on instead of the request's own. The
/// routes are matched on the request's method, so these (in every spelling, see
/// [`crate::headers`]) are removed before the request goes on.
pub const METHOD_OVERRIDE_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-http-method-override"),
    http::HeaderName::from_static("x-http-method"),
    http::HeaderName::from_static("x-method-override"),
];

/// The compiled route table: first match wins. Cheap to clone.
///
/// Requests are read one way before they are matched (see [`path`]): `;` path parameters
/// are refused unless [`path_parameters`](Routes::path_parameters) strips them; a path that
/// would match another route with letter case ignored is refused unless
/// [`path_case`](Routes::path_case) says how the upstream reads case; a method that is not in
/// upper case (`post`), and a `_method` query parameter, are refused; method-override headers
/// are removed ([`METHOD_OVERRIDE_HEADERS`]).
///
/// # Example
///
/// ```
/// use http::Method;
/// use portcullis::authz::path::{PathCase, PathError, PathParameters};
/// use portcullis::authz::{Route, Routes};
///
/// let routes = Routes::new([Route::new("/admin/**").unwrap().scopes_all(["admin"])]);
/// assert_eq!(routes.resolve(&Method::GET, "/admin;x/users").unwrap_err(), PathError::Parameter);
/// assert_eq!(routes.resolve(&Method::GET, "/ADMIN/users").unwrap_err(), PathError::AmbiguousCase);
/// let post = Method::from_bytes(b"post").unwrap();
/// assert_eq!(routes.resolve(&post, "/admin").unwrap_err(), PathError::Method);
///
/// let iis = routes.clone().path_case(PathCase::Insensitive).path_parameters(PathParameters::Strip);
/// assert!(iis.resolve(&Method::GET, "/ADMIN;x/users").unwrap().is_some());
/// ```
#[derive(Clone, Default)]
pub struct Routes {
    routes: Arc<[Route]>,
    cors_preflight: bool,
    parameters: PathParameters,
    case: PathCase,
    /// How many times the table was searched (for the test that the policy stack searches
    /// once per request).
    #[cfg(test)]
    searches: Arc<std::sync::atomic::AtomicUsize>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.routes)
            .field("cors_preflight", &self.cors_preflight)
            .field("parameters", &self.parameters)
            .field("case", &self.case)
            .finish()
    }
}

impl Routes {
    /// A table of these routes, in order.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        Self {
            routes: routes.into_iter().collect(),
            cors_preflight: false,
            parameters: PathParameters::Reject,
            case: PathCase::RejectAmbiguous,
            #[cfg(test)]
            searches: Arc::default(),
        }
    }

    /// How `;` path parameters are read (default: refused, see [`PathParameters`]).
    pub fn path_parameters(mut self, parameters: PathParameters) -> Self {
        self.parameters = parameters;
        self
    }

    /// How letter case in paths is compared (default: a path that matches another route with
    /// case ignored is refused, see [`PathCase`]).
    pub fn path_case(mut self, case: PathCase) -> Self {
        self.case = case;
        self
    }

    /// How many times this table (and its clones) was searched.
    #[cfg(test)]
    pub(crate) fn searches(&self) -> usize {
        self.searches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The route of a request whose path an earlier layer has normalised.
    pub(crate) fn resolve_normalized<B>(
        &self,
        request: &http::Request<B>,
    ) -> Option<(usize, &Route)> {
        self.resolve_indexed(request.method(), request.uri().path())
            .ok()
            .flatten()
    }

    /// Lets CORS preflight requests (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) through without a token. Off by default.
    pub fn allow_cors_preflight(mut self, allow: bool) -> Self {
        self.cors_preflight = allow;
        self
    }

    /// The routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route matching `method` and the normalised `path`; `None` when no route
    /// matches (a token is then required). Does not allocate.
    pub fn resolve(&self, method: &Method, path: &str) -> Result<Option<&Route>, PathError> {
        Ok(self.resolve_indexed(method, path)?.map(|(_, route)| route))
    }

    /// [`Routes::resolve`], with the route's index in the table.
    pub(crate) fn resolve_indexed(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<Option<(usize, &Route)>, PathError> {
        self.find(method, &NormalizedPath::parse(path, self.parameters)?)
    }

    /// The first route matching `method` and `path`, with its index, read as the table's
    /// [`PathCase`] says. Refuses a method that is not in upper case.
    fn find(
        &self,
        method: &Method,
        path: &NormalizedPath<'_>,
    ) -> Result<Option<(usize, &Route)>, PathError> {
        #[cfg(test)]
        self.searches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(PathError::Method);
        }
        let first = |ignoring_case| {
            self.routes
                .iter()
                .enumerate()
                .find(|(_, route)| route.matches(method, path, ignoring_case))
        };
        match self.case {
            PathCase::Sensitive => Ok(first(false)),
            PathCase::Insensitive => Ok(first(true)),
            // An exact match is also a match with case ignored, so no route before the first
            // match with case ignored matches exactly: the two readings agree exactly when that
            // route also matches exactly (or there is none).
            PathCase::RejectAmbiguous => match first(true) {
                Some((_, route)) if !route.matches(method, path, false) => {
                    Err(PathError::AmbiguousCase)
                }
                found => Ok(found),
            },
        }
    }

    /// Resolves the route of a request and, when its path was not normalised, rewrites the
    /// request's URI to the normalised path (query kept) so the service sees exactly what was
    /// authorised. Returns the route and whether the request is a CORS preflight to let through.
    pub(crate) fn resolve_request<B>(
        &self,
        request: &mut http::Request<B>,
    ) -> Result<Match<'_>, PathError> {
        let preflight = self.cors_preflight && is_preflight(request);
        if request.uri().query().is_some_and(asks_for_another_method) {
            return Err(PathError::Method);
        }
        // The override names hold no `_` (a unit test checks).
        crate::headers::remove_spellings(
            request.headers_mut(),
            &METHOD_OVERRIDE_HEADERS,
            true,
            true,
        );
        let uri = request.uri();
        let normalized = NormalizedPath::parse(uri.path(), self.parameters)?;
        let route = self.find(request.method(), &normalized)?;
        if !normalized.is_canonical() {
            let mut path_and_query = normalized.to_path();
            if let Some(query) = uri.query() {
                path_and_query.push('?');
                path_and_query.push_str(query);
            }
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(path_and_query.parse().map_err(|_| PathError::Forbidden)?);
            *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| PathError::Forbidden)?;
        }
        Ok((route, preflight))
    }
}

/// A request's route (its index in the table and the route), if any matched, and whether the
/// request is a CORS preflight to let through.
pub(crate) type Match<'r> = (Option<(usize, &'r Route)>, bool);

/// Whether a query names a `_method` parameter (read by Symfony, Laravel and others as the
/// method to act on), in any spelling of its name.
fn asks_for_another_method(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        path::decodes_to_ignoring_case(name, "_method")
    })
}

fn is_preflight<B>(request: &http::Request<B>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(http::header::ORIGIN)
        && request
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// For the fuzz target: a request that the table accepts is forwarded with exactly the path
/// that was matched (canonical, without parameters, resolving to the same route) and without
/// method-override headers; one it refuses was not readable one way.
#[cfg(fuzzing)]
pub(crate) fn fuzz_resolve(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parameters = if mode & 1 == 0 {
        PathParameters::Reject
    } else {
        PathParameters::Strip
    };
    let case = match (mode >> 1) % 3 {
        0 => PathCase::RejectAmbiguous,
        1 => PathCase::Sensitive,
        _ => PathCase::Insensitive,
    };
    let split = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
    let (method, target) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(mut request) = http::Request::builder()
        .method(method)
        .uri(target)
        .header("x-http-method-override", "DELETE")
        .header("x_http_method", "DELETE")
        .body(())
    else {
        return;
    };
    let routes = Routes::new([
        Route::new("/public/**").unwrap().auth(Auth::None),
        Route::new("/admin/**").unwrap().scopes_all(["admin"]),
        Route::new("/orders/{id}")
            .unwrap()
            .methods([Method::POST])
            .scopes_all(["write"]),
        Route::new("/Orders/*").unwrap(),
    ])
    .path_parameters(parameters)
    .path_case(case);
    let Ok((found, _)) = routes.resolve_request(&mut request) else {
        return;
    };
    let found = found.map(|(i, _)| i);
    assert!(
        !request
            .method()
            .as_str()
            .bytes()
            .any(|b| b.is_ascii_lowercase())
    );
    assert!(request.headers().is_empty(), "override headers go");
    let forwarded = request.uri().path();
    assert!(!forwarded.contains(';'), "{forwarded:?}");
    let again = NormalizedPath::new(forwarded).expect("the forwarded path reads one way");
    assert!(again.is_canonical(), "{forwarded:?} is what was matched");
    // An empty path (a target in authority form) reads as the root.
    if !forwarded.is_empty() {
        assert_eq!(again.to_path(), forwarded);
    }
    let strict = routes.clone().path_parameters(PathParameters::Reject);
    let resolved = strict
        .resolve_indexed(request.method(), forwarded)
        .expect("the forwarded request is accepted again");
    assert_eq!(resolved.map(|(i, _)| i), found, "{forwarded:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_override_names_hold_no_underscore() {
        for name in &METHOD_OVERRIDE_HEADERS {
            assert!(!name.as_str().contains('_'), "{name}");
        }
    }
}
