//! Hash slots: the one of [`SLOTS`] slots a key belongs to.
//!
//! A cluster splits its keyspace into 16384 slots. A key's slot is the
//! CRC16 (the XMODEM variant) of the key, modulo 16384; when the key holds a
//! non-empty hash tag — the text between its first `{` and the first `}`
//! after it — only the tag is hashed, so `{user1}.name` and `{user1}.mail`
//! share a slot and can be used together in one command.

/// How many hash slots a cluster has.
pub(crate) const SLOTS: u16 = 16384;

/// The CRC16-XMODEM polynomial (x^16 + x^12 + x^5 + 1).
const POLY: u16 = 0x1021;

/// The CRC of every byte value, so hashing costs one lookup per byte.
static CRC16_TABLE: [u16; 256] = crc16_table();

/// Builds [`CRC16_TABLE`] at compile time: entry `b` is the CRC register
/// after shifting the byte `b` through it, most significant bit first.
const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// CRC16-XMODEM of `bytes`: polynomial 0x1021, initial value 0, no
/// reflection, no final XOR.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        let index = usize::from((crc >> 8) as u8 ^ b);
        (crc << 8) ^ CRC16_TABLE[index]
    })
}

/// The part of `key` that is hashed: the content of its hash tag (between
/// the first `{` and the first `}` after it) when that is not empty, else
/// the whole key.
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    let open = match key.iter().position(|&b| b == b'{') {
        Some(i) => i,
        None => return key,
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &rest[..len],
        _ => key,
    }
}

/// The hash slot (0 to 16383) that `key` belongs to in a Redis Cluster.
///
/// The CRC16 (XMODEM) of the key modulo 16384, as the server computes it
/// (`CLUSTER KEYSLOT`): when the key has a non-empty hash tag, the text
/// between its first `{` and the first `}` after it, only the tag is hashed,
/// so keys that share a tag share a slot.
///
/// ```
/// use respline::cluster::key_slot;
///
/// assert_eq!(key_slot(b"foo"), 12182);
/// // One tag, one slot: these can be used together in MGET, MULTI or a script.
/// assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
/// // An empty tag does not count: the whole key is hashed.
/// assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bit-by-bit CRC16-XMODEM, to check the table against.
    fn crc16_bitwise(bytes: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &b in bytes {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ POLY
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc16_matches_the_cluster_spec_vector() {
        // The Redis Cluster specification's test vector.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn table_matches_the_bitwise_definition() {
        for b in 0..=255u8 {
            assert_eq!(crc16(&[b]), crc16_bitwise(&[b]), "byte {}", b);
        }
        let text: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        assert_eq!(crc16(&text), crc16_bitwise(&text));
    }

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"123456789"), 0x31C3 & 0x3FFF);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty first tag: the whole key is hashed, later tags are ignored.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        // The tag ends at the first `}` after the first `{`.
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace, a closing brace before the opening one.
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"}foo{bar}"), b"bar");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{a}"), b"a");
        assert_eq!(hash_tag(b"{"), b"{");
        // Binary keys are fine.
        assert_eq!(hash_tag(b"\xff{\x00\x01}\xfe"), b"\x00\x01");
    }

    #[test]
    fn every_slot_is_in_range() {
        for i in 0..5000u32 {
            let key = i.to_le_bytes();
            assert!(key_slot(&key) < SLOTS);
        }
    }
}
