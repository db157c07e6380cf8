//! The RocksDB key encoding of DESIGN §2: `u16 BE len(hash_key) ++ hash_key ++ sort_key`.

use crate::error::WingError;

/// Longest hash key the encoding can carry.
pub const MAX_HASH_KEY_LEN: usize = u16::MAX as usize;

/// Checks that `hash_key` fits the encoding.
pub fn validate_hash_key(hash_key: &[u8]) -> Result<(), WingError> {
    if hash_key.len() > MAX_HASH_KEY_LEN {
        return Err(WingError::InvalidArgument(format!(
            "hash_key is {} bytes; the limit is {MAX_HASH_KEY_LEN}",
            hash_key.len()
        )));
    }
    Ok(())
}

/// Encodes a record key. Fails when the hash key is longer than [`MAX_HASH_KEY_LEN`].
pub fn encode_key(hash_key: &[u8], sort_key: &[u8]) -> Result<Vec<u8>, WingError> {
    validate_hash_key(hash_key)?;
    let mut out = Vec::with_capacity(2 + hash_key.len() + sort_key.len());
    out.extend_from_slice(&(hash_key.len() as u16).to_be_bytes());
    out.extend_from_slice(hash_key);
    out.extend_from_slice(sort_key);
    Ok(out)
}

/// Splits an encoded key into `(hash_key, sort_key)`. Fails on keys that are too short for their
/// length prefix (corrupt or foreign data).
pub fn decode_key(key: &[u8]) -> Result<(&[u8], &[u8]), WingError> {
    if key.len() < 2 {
        return Err(WingError::Corruption(format!("encoded key of {} bytes has no length prefix", key.len())));
    }
    let len = u16::from_be_bytes([key[0], key[1]]) as usize;
    if key.len() < 2 + len {
        return Err(WingError::Corruption(format!(
            "encoded key of {} bytes claims a hash_key of {len} bytes",
            key.len()
        )));
    }
    Ok((&key[2..2 + len], &key[2 + len..]))
}

/// The prefix shared by every key of `hash_key`: `[len][hash_key]`.
pub fn hash_key_prefix(hash_key: &[u8]) -> Result<Vec<u8>, WingError> {
    encode_key(hash_key, b"")
}

/// Pegasus's "next blob": the smallest key greater than every key that starts with `prefix`.
/// Increments the last byte that is not 0xFF and truncates after it; `None` when the prefix is
/// all 0xFF (no upper bound).
pub fn next_blob(prefix: &[u8]) -> Option<Vec<u8>> {
    let pos = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut out = prefix[..=pos].to_vec();
    out[pos] += 1;
    Some(out)
}

/// The key range `[start, end)` that holds every sort key of `hash_key`.
pub fn hash_key_range(hash_key: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), WingError> {
    let start = hash_key_prefix(hash_key)?;
    let end = next_blob(&start);
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cases: [(&[u8], &[u8]); 5] =
            [(b"", b""), (b"h", b""), (b"", b"s"), (b"user\x00\xff", b"\x00sort\xff"), (b"hash", b"sort")];
        for (hk, sk) in cases {
            let k = encode_key(hk, sk).unwrap();
            assert_eq!(decode_key(&k).unwrap(), (hk, sk));
        }
        let long = vec![7u8; MAX_HASH_KEY_LEN];
        let k = encode_key(&long, b"x").unwrap();
        assert_eq!(decode_key(&k).unwrap(), (&long[..], &b"x"[..]));
    }

    #[test]
    fn layout_matches_design() {
        assert_eq!(encode_key(b"ab", b"c").unwrap(), vec![0, 2, b'a', b'b', b'c']);
    }

    #[test]
    fn over_long_hash_key_is_rejected() {
        let err = encode_key(&vec![0u8; MAX_HASH_KEY_LEN + 1], b"").unwrap_err();
        assert!(err.to_string().contains("65536 bytes"), "{err}");
    }

    #[test]
    fn truncated_keys_are_errors() {
        assert!(decode_key(b"").is_err());
        assert!(decode_key(&[0]).is_err());
        assert!(decode_key(&[0, 5, b'a']).is_err());
    }

    #[test]
    fn next_blob_bounds_the_hash_key() {
        assert_eq!(next_blob(&[0, 2, b'a', b'b']), Some(vec![0, 2, b'a', b'c']));
        assert_eq!(next_blob(&[0, 2, b'a', 0xFF]), Some(vec![0, 2, b'b']));
        assert_eq!(next_blob(&[0xFF, 0xFF]), None);
        let (start, end) = hash_key_range(b"ab").unwrap();
        let end = end.unwrap();
        for sk in [&b""[..], b"\xff\xff\xff", b"zzz"] {
            let k = encode_key(b"ab", sk).unwrap();
            assert!(k >= start && k < end);
        }
        // A longer hash key with the same bytes is outside the range.
        let other = encode_key(b"abc", b"").unwrap();
        assert!(!(other >= start && other < end));
    }
}
