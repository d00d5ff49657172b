//! Hash slots: which of the 16384 cluster slots a key belongs to.
//!
//! The slot is CRC16/XMODEM of the key modulo 16384, computed over the hash
//! tag when the key has one: the bytes between the first `{` and the first
//! `}` after it, if that span is not empty.
//!
//! ```
//! use redcore::slot::key_slot;
//! assert_eq!(key_slot(b"foo"), 12182);
//! assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
//! ```

/// The number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The part of a key that is hashed: the hash tag when there is a non-empty
/// one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key) {
        let rest = &key[open + 1..];
        if let Some(close) = memchr::memchr(b'}', rest) {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The hash slot of a key.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOT_COUNT);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(
            hash_tag(b"foo{}{bar}"),
            b"foo{}{bar}",
            "an empty first tag is ignored"
        );
        assert_eq!(
            hash_tag(b"foo{{bar}}zap"),
            b"{bar",
            "the tag ends at the first closing brace"
        );
        assert_eq!(
            hash_tag(b"foo{bar}{zap}"),
            b"bar",
            "only the first tag counts"
        );
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"no}tag{"), b"no}tag{");
        assert_eq!(hash_tag(b"{a"), b"{a");
    }
}
