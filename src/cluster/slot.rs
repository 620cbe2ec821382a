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

/// `TABLES[k][b]`: the CRC register after shifting byte `b` and then `k`
/// zero bytes through it. `TABLES[0]` is the classic one-byte table; the
/// others let [`crc16`] take eight bytes per step with eight independent
/// lookups ("slicing by 8"): the CRC is linear, so the register after eight
/// bytes is the XOR of each byte's contribution.
static TABLES: [[u16; 256]; 8] = crc16_tables();

/// Builds [`TABLES`] at compile time.
const fn crc16_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
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
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            // One more zero byte through the register.
            let prev = tables[k - 1][byte];
            tables[k][byte] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

/// CRC16-XMODEM of `bytes`: polynomial 0x1021, initial value 0, no
/// reflection, no final XOR.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let t = &TABLES;
    let mut crc = 0u16;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        // The register's two bytes meet the chunk's first two.
        let [hi, lo] = crc.to_be_bytes();
        crc = t[7][usize::from(hi ^ c[0])]
            ^ t[6][usize::from(lo ^ c[1])]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    chunks.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ t[0][usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of `key` that is hashed: the content of its hash tag (between
/// the first `{` and the first `}` after it) when that is not empty, else
/// the whole key.
#[inline]
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    let open = match find_byte(key, b'{') {
        Some(i) => i,
        None => return key,
    };
    let rest = &key[open + 1..];
    match find_byte(rest, b'}') {
        Some(len) if len > 0 => &rest[..len],
        _ => key,
    }
}

/// The first position of `byte` in `bytes`, eight bytes per step.
#[inline]
fn find_byte(bytes: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ pattern;
        // A zero byte in `word` is a match (the classic has-zero-byte test;
        // it may flag a byte after a true match, never before one).
        if word.wrapping_sub(ONES) & !word & HIGHS != 0 {
            return c.iter().position(|&b| b == byte).map(|i| at + i);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == byte)
        .map(|i| at + i)
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
    fn tables_match_the_bitwise_definition() {
        for b in 0..=255u8 {
            assert_eq!(crc16(&[b]), crc16_bitwise(&[b]), "byte {}", b);
        }
        let text: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        // Every length and offset, so each path of the eight-byte steps
        // and the remainder meet.
        for start in 0..9 {
            for end in start..text.len().min(start + 40) {
                let part = &text[start..end];
                assert_eq!(crc16(part), crc16_bitwise(part), "{:?}", part);
            }
        }
        assert_eq!(crc16(&text), crc16_bitwise(&text));
    }

    #[test]
    fn find_byte_finds_the_first_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b'{';
                if at + 1 < len {
                    bytes[at + 1] = b'{';
                }
                assert_eq!(find_byte(&bytes, b'{'), Some(at));
                // 0x7a and 0x7c sit next to `{` (0x7b): no false match.
                let near: Vec<u8> = (0..len)
                    .map(|i| if i % 2 == 0 { 0x7a } else { 0x7c })
                    .collect();
                assert_eq!(find_byte(&near, b'{'), None);
            }
        }
        assert_eq!(find_byte(b"", b'{'), None);
        assert_eq!(find_byte(&[0xff; 17], 0x7f), None);
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
