//! Pegasus's CRC-64 and the partition of a record (DESIGN §2).
//!
//! Reflected table for polynomial `0x9a6c9329ac4bc9b5`, initial value and final xor all ones.
//! It has no standard catalogue name; keeping it bit-exact lets SST files made by Pegasus
//! tooling land in the right partition.

const POLY: u64 = 0x9a6c_9329_ac4b_c9b5;

const TABLE: [u64; 256] = build_table();

const fn build_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Pegasus's CRC-64 of `data`.
pub fn crc64(data: &[u8]) -> u64 {
    let mut crc = !0u64;
    for &b in data {
        crc = TABLE[((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The hash that places a record: `crc64(hash_key)`, or `crc64(sort_key)` when the hash key is
/// empty.
pub fn key_hash(hash_key: &[u8], sort_key: &[u8]) -> u64 {
    if hash_key.is_empty() {
        crc64(sort_key)
    } else {
        crc64(hash_key)
    }
}

/// Index of the partition that holds `(hash_key, sort_key)` in a table of `partition_count`
/// partitions (a power of two, so `%` and Pegasus's `& (count - 1)` agree).
pub fn partition_index(hash_key: &[u8], sort_key: &[u8], partition_count: u32) -> u32 {
    debug_assert!(partition_count.is_power_of_two());
    (key_hash(hash_key, sort_key) % partition_count as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_from_design() {
        assert_eq!(crc64(b"123456789"), 0xae8b_1486_0a79_9888);
        assert_eq!(crc64(b"hello"), 0x3377_8570_0652_4257);
        assert_eq!(crc64(b""), 0);
    }

    #[test]
    fn empty_hash_key_hashes_sort_key() {
        assert_eq!(key_hash(b"", b"hello"), crc64(b"hello"));
        assert_eq!(key_hash(b"hk", b"hello"), crc64(b"hk"));
    }

    #[test]
    fn modulo_and_mask_agree_for_powers_of_two() {
        for count in [1u32, 2, 4, 8, 64, 1024] {
            for i in 0..200u32 {
                let hk = format!("key-{i}");
                let h = crc64(hk.as_bytes());
                assert_eq!(partition_index(hk.as_bytes(), b"", count) as u64, h & (count as u64 - 1));
            }
        }
    }
}
