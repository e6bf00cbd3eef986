//! The two DER shapes the crate needs: a PKCS#1 `RSAPublicKey` (SEQUENCE of two INTEGERs).
//!
//! ring verifies RSA signatures against this encoding; JWKs carry the modulus and exponent
//! separately. Decoding never panics on any input.

/// Encodes `n` and `e` (big-endian, unsigned) as a PKCS#1 `RSAPublicKey`.
pub(crate) fn encode_rsa_public_key(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    encode_unsigned_integer(&mut body, n);
    encode_unsigned_integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0x30);
    encode_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Decodes a PKCS#1 `RSAPublicKey` into its modulus and exponent, without leading zeros.
pub(crate) fn decode_rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (seq, rest) = read_tlv(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, rest) = read_tlv(seq, 0x02)?;
    let (e, rest) = read_tlv(rest, 0x02)?;
    if !rest.is_empty() {
        return None;
    }
    Some((strip_zeros(n), strip_zeros(e)))
}

/// The algorithm of a `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7) this crate can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpkiAlgorithm {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads a `SubjectPublicKeyInfo`: the key's algorithm and its public key bytes (a PKCS#1
/// `RSAPublicKey`, an EC point, or an Ed25519 key).
pub(crate) fn decode_spki(der: &[u8]) -> Option<(SpkiAlgorithm, &[u8])> {
    let (spki, rest) = read_tlv(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (alg_id, rest) = read_tlv(spki, 0x30)?;
    let (bits, rest) = read_tlv(rest, 0x03)?;
    if !rest.is_empty() {
        return None;
    }
    let (oid, params) = read_tlv(alg_id, 0x06)?;
    let alg = match oid {
        OID_RSA => SpkiAlgorithm::Rsa,
        OID_ED25519 => SpkiAlgorithm::Ed25519,
        OID_EC => match read_tlv(params, 0x06)? {
            (OID_P256, []) => SpkiAlgorithm::EcP256,
            (OID_P384, []) => SpkiAlgorithm::EcP384,
            _ => return None,
        },
        _ => return None,
    };
    match bits {
        [0, key @ ..] => Some((alg, key)),
        _ => None,
    }
}

fn strip_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn encode_unsigned_integer(out: &mut Vec<u8>, value: &[u8]) {
    let value = strip_zeros(value);
    let pad = value.first().is_none_or(|b| b & 0x80 != 0);
    out.push(0x02);
    encode_len(out, value.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(value);
}

fn encode_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || count > input.len() {
            return None;
        }
        let (len_bytes, rest) = input.split_at(count);
        input = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if len > input.len() {
        return None;
    }
    Some(input.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_high_bit_and_long_lengths() {
        let n: Vec<u8> = std::iter::once(0x80).chain(vec![0x11; 255]).collect();
        let e = [0x01, 0x00, 0x01];
        let der = encode_rsa_public_key(&n, &e);
        let (n2, e2) = decode_rsa_public_key(&der).unwrap();
        assert_eq!(n2, &n[..]);
        assert_eq!(e2, &e[..]);
    }

    #[test]
    fn garbage_is_rejected() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x02, 0x02, 0x05],
        ] {
            assert!(decode_rsa_public_key(input).is_none());
        }
    }
}
