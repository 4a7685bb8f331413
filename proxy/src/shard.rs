//! Entity key to shard: a stable hash (64-bit FNV-1a of the UTF-8 entity id) modulo
//! the service's shard count. Stable across processes, versions and platforms, so
//! the gateway and every sidecar agree on where an entity lives.

/// The shard of an entity id, for a service with `shard_count` shards (at least 1).
pub fn shard_of(entity_id: &str, shard_count: u32) -> u32 {
    debug_assert!(shard_count > 0, "a service has at least one shard");
    (fnv1a(entity_id.as_bytes()) % u64::from(shard_count.max(1))) as u32
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_keep_the_hash_stable() {
        // Published FNV-1a 64 test vectors: changing the hash would move every entity.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_are_in_range_and_spread() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            let shard = shard_of(&format!("user-{i}"), 16);
            counts[shard as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_eq!(shard_of("anything", 1), 0);
    }
}
