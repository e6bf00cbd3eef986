//! Demo mode: an embedded issuer, a sample policy and a token.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

pub(crate) const DEMO_ISSUER: &str = "https://demo.portcullis.local/";
pub(crate) const DEMO_AUDIENCE: &str = "demo-api";

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The demo's folder: a new one in the temporary directory, with a name nobody can guess,
/// readable by this user alone (it holds the assertion's private key), and removed when the
/// gateway stops.
pub(crate) fn folder() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("portcullis-demo-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| format!("cannot make the demo folder: {e}"))
}

/// The demo: an issuer key pair and an assertion key in `dir` (from [`folder`]), a sample
/// policy beside them, and a token. Returns the policy file and the token.
pub(crate) fn demo(dir: &Path) -> Result<(PathBuf, String), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot make a key")?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot make a key")?;
    // SubjectPublicKeyInfo for a P-256 point: the fixed DER prefix, then the point.
    let mut spki = hex_prefix();
    spki.extend_from_slice(pair.public_key().as_ref());
    let assertion = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot make a key")?;
    // Each file new (never one planted there before) and readable by this user alone.
    let write = |name: &str, text: String| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(name))
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    write("demo-issuer.pub.pem", pem("PUBLIC KEY", &spki))?;
    write("assertion.pem", pem("PRIVATE KEY", assertion.as_ref()))?;
    let policy = format!(
        r#"# The demo policy: edit it while the gateway runs, and it reloads.
[token]
forward = false                     # the upstream gets identity headers, not the token

[[issuers]]
issuer = "{DEMO_ISSUER}"
audiences = ["{DEMO_AUDIENCE}"]
algorithms = ["ES256"]
leeway = "30s"
keys = {{ pem_files = ["demo-issuer.pub.pem"] }}

[[routes]]
path = "/health"
auth = "none"
[[routes]]
path = "/metrics"
auth = "none"
[[routes]]
path = "/.well-known/portcullis/jwks.json"
auth = "none"
[[routes]]
path = "/orders/**"
methods = ["POST", "PUT", "DELETE"]
scopes_all = ["write:orders"]
[[routes]]
path = "/orders/**"
scopes_any = ["read:orders", "write:orders"]
[[routes]]
path = "/admin/**"
scopes_all = ["admin"]

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "60/min"
burst = 10

[upstream_headers]
x-user-id = "sub"
x-scopes = "scope"

[assertion]
key_file = "assertion.pem"
issuer = "https://gateway.demo.portcullis.local"
audience = "demo-upstream"
"#
    );
    write("policy.toml", policy)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("demo-1".into());
    let claims = json!({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "demo-user", "iat": now,
        "exp": now + 3600, "scope": "read:orders write:orders"});
    portcullis::crypto::install();
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref()))
        .map_err(|e| e.to_string())?;
    Ok((dir.join("policy.toml"), token))
}

fn hex_prefix() -> Vec<u8> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes) }
    vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ]
}

/// Prints how to try the demo: the issuer, the policy file, the token and curl lines.
pub(crate) fn print_commands(token: &str, path: &Path, addr: SocketAddr) {
    println!("demo issuer: {DEMO_ISSUER} (audience {DEMO_AUDIENCE}, ES256, valid for an hour)");
    println!("policy: {} (edit it: it reloads)", path.display());
    println!("token: {token}");
    println!();
    println!("# 200, the echo upstream shows what reached it:");
    println!("curl -i -H 'Authorization: Bearer {token}' http://{addr}/orders/42");
    println!("# 401, no token:");
    println!("curl -i http://{addr}/orders/42");
    println!("# 401 invalid_token, a tampered token:");
    println!("curl -i -H 'Authorization: Bearer {token}x' http://{addr}/orders/42");
    println!("# 403 insufficient_scope, the token lacks the admin scope:");
    println!("curl -i -H 'Authorization: Bearer {token}' http://{addr}/admin/users");
    println!("# the upstream never sees a client's x-user-id; it gets the token's subject:");
    println!(
        "curl -i -H 'Authorization: Bearer {token}' -H 'X-User-Id: admin' http://{addr}/orders/42"
    );
    println!(
        "# 429 with Retry-After once demo-user's burst of 10 is spent (the 200s above count\n\
         # too: after them, 8 more 200s, then 429s; RateLimit headers on each):"
    );
    println!(
        "for i in $(seq 12); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'Authorization: Bearer {token}' http://{addr}/orders/42; done; echo"
    );
    println!("# decisions, rate-limit results and latency, in Prometheus text format:");
    println!("curl -s http://{addr}/metrics");
    println!("# the keys that verify the x-portcullis-assertion header the upstream receives:");
    println!("curl -i http://{addr}/.well-known/portcullis/jwks.json");
    println!("# 200, a public route:");
    println!("curl -i http://{addr}/health");
    println!();
}
