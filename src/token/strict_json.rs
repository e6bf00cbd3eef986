//! A JSON reader for untrusted token segments: rejects duplicate object keys at any depth
//! (two parsers must never read different values from one token), caps nesting, and rejects
//! numbers that do not fit an `f64`.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::jws::{JoseHeader, JwsError, is_jwt_media_type};
use crate::crypto::Algorithm;

/// Nesting deeper than this is rejected.
const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one JSON object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(de::Error::custom("not a JSON object")),
    }
}

/// Reads a JOSE header strictly (duplicate keys at any depth, nesting, non-objects are
/// [`JwsError::Json`]) without building a map, and refuses every parameter the crate does not
/// trust.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<JoseHeader, JwsError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let header =
        de::Deserializer::deserialize_map(&mut de, HeaderVisitor).map_err(|_| JwsError::Json)?;
    de.end().map_err(|_| JwsError::Json)?;
    header
}

struct HeaderVisitor;

/// The most header members beyond the ones the crate acts on.
const MAX_EXTRA_HEADER_MEMBERS: usize = 16;

/// The header parameters that change how a token is read, each refused or checked.
const KNOWN: [&str; 12] = [
    "alg", "kid", "typ", "cty", "crit", "b64", "jwk", "jku", "x5u", "x5c", "enc", "zip",
];

impl<'de> Visitor<'de> for HeaderVisitor {
    /// The outer `Result` is the JSON's, the inner the header's verdict, decided after the whole
    /// object was read (so a duplicate key later in the object still wins as malformed JSON).
    type Value = Result<JoseHeader, JwsError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = 0u16;
        let mut others: Vec<String> = Vec::new();
        let mut values: [Option<Value>; KNOWN.len()] = Default::default();
        let value_seed = Strict { depth: 1 };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match KNOWN.iter().position(|k| *k == key) {
                Some(i) => {
                    if seen & (1 << i) != 0 {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    seen |= 1 << i;
                    values[i] = Some(map.next_value_seed(value_seed)?);
                }
                None => {
                    // Real JOSE headers have a handful of members; the cap keeps this duplicate
                    // check (and an uncached token's cost) small whatever the client sends.
                    if others.len() >= MAX_EXTRA_HEADER_MEMBERS {
                        return Err(de::Error::custom("too many header members"));
                    }
                    if others.iter().any(|o| *o == key) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    others.push(key.into_owned());
                    map.next_value_seed(value_seed)?;
                }
            }
        }
        let [alg, kid, typ, cty, crit, b64, jwk, jku, x5u, x5c, enc, zip] = values;
        Ok(judge_header(
            alg,
            kid,
            typ,
            cty,
            crit.is_some(),
            b64,
            [jwk, jku, x5u, x5c],
            [enc, zip],
        ))
    }
}

#[allow(clippy::too_many_arguments)]
fn judge_header(
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
    cty: Option<Value>,
    crit: bool,
    b64: Option<Value>,
    embedded_keys: [Option<Value>; 4],
    encryption: [Option<Value>; 2],
) -> Result<JoseHeader, JwsError> {
    let alg = match alg {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(JwsError::AlgNone);
        }
        Some(Value::String(name)) => {
            Algorithm::from_name(&name).ok_or(JwsError::UnsupportedAlgorithm)?
        }
        _ => return Err(JwsError::UnsupportedAlgorithm),
    };
    if crit {
        return Err(JwsError::Crit);
    }
    match b64 {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(JwsError::UnencodedPayload),
        Some(_) => return Err(JwsError::HeaderParameter),
    }
    if embedded_keys.iter().any(Option::is_some) {
        return Err(JwsError::EmbeddedKey);
    }
    if encryption.iter().any(Option::is_some) {
        return Err(JwsError::Nested);
    }
    match cty {
        None => {}
        Some(Value::String(cty)) if is_jwt_media_type(&cty) => return Err(JwsError::Nested),
        Some(Value::String(_)) => {}
        Some(_) => return Err(JwsError::HeaderParameter),
    }
    let string = |value: Option<Value>| match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwsError::HeaderParameter),
    };
    Ok(JoseHeader {
        alg,
        kid: string(kid)?,
        typ: string(typ)?,
    })
}

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl Strict {
    fn nested<E: de::Error>(self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deeply"));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(value) = seq.next_element_seed(inner)? {
            out.push(value);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            if out.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_objects() {
        let map = parse_object(br#"{"a":1,"b":{"c":[1,2,{"d":null}]},"e":1.5}"#).unwrap();
        assert_eq!(map["b"]["c"][2]["d"], Value::Null);
    }

    #[test]
    fn headers_with_many_members_are_refused() {
        let members: Vec<String> = (0..17).map(|i| format!("\"x{i}\":1")).collect();
        let header = format!("{{\"alg\":\"RS256\",{}}}", members.join(","));
        assert_eq!(parse_header(header.as_bytes()), Err(JwsError::Json));
        let header = format!("{{\"alg\":\"RS256\",{}}}", members[..16].join(","));
        assert!(parse_header(header.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_object(br#"{"x":{"a":1,"a":2}}"#).is_err());
        assert!(parse_object(br#"{"x":[{"a":1,"a":1}]}"#).is_err());
    }

    #[test]
    fn rejects_deep_nesting_huge_numbers_and_non_objects() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(parse_object(deep.as_bytes()).is_err());
        let very_deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_object(very_deep.as_bytes()).is_err());
        assert!(parse_object(br#"{"exp":1e400}"#).is_err());
        assert!(parse_object(br#"[1]"#).is_err());
        assert!(parse_object(br#"{"a":1} x"#).is_err());
        assert!(parse_object(b"{\"a\":\"\xff\"}").is_err());
    }
}
