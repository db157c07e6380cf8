//! Which record an operation touches: YCSB's uniform and (scrambled) zipfian choosers, and how a
//! record number maps onto wingkv's `(hash_key, sort_key)`.

use rand::Rng;

/// How records are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every record equally likely.
    Uniform,
    /// YCSB's scrambled zipfian (theta 0.99): a few hot records, spread over the key space.
    Zipfian,
}

/// Picks record numbers in `0..n`.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Uniform.
    Uniform {
        /// Records.
        n: u64,
    },
    /// YCSB's ScrambledZipfian: ranks from a zipfian over 10^10 items, hashed onto the records,
    /// so the hot records are spread over the key space and every record can be picked.
    Zipfian {
        /// Ranks over [`SCRAMBLED_ITEMS`].
        ranks: Zipfian,
        /// Records.
        n: u64,
    },
}

/// Items of the zipfian a scrambled zipfian draws ranks from, and its zeta (YCSB's constants).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

impl KeyChooser {
    /// A chooser over `n` records.
    pub fn new(distribution: Distribution, n: u64) -> Self {
        match distribution {
            Distribution::Uniform => Self::Uniform { n: n.max(1) },
            Distribution::Zipfian => Self::Zipfian {
                ranks: Zipfian::with_zetan(SCRAMBLED_ITEMS, ZIPFIAN_THETA, SCRAMBLED_ZETAN),
                n: n.max(1),
            },
        }
    }

    /// The next record number.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match self {
            Self::Uniform { n } => rng.gen_range(0..*n),
            Self::Zipfian { ranks, n } => fnv1a64(ranks.next_rank(rng)) % n,
        }
    }
}

/// YCSB's default skew.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Gray et al.'s zipfian generator ("Quickly generating billion-record synthetic databases"),
/// as YCSB uses it: rank 0 is the hottest.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A generator over ranks `0..n`, summing zeta(n) (O(n); the tests' small zipfians).
    #[cfg(test)]
    pub fn new(n: u64, theta: f64) -> Self {
        let zetan = (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        Self::with_zetan(n, theta, zetan)
    }

    /// A generator over ranks `0..n` whose zeta(n) is known (`n` too large to sum).
    pub fn with_zetan(n: u64, theta: f64, zetan: f64) -> Self {
        let zeta2 = (1..=2.min(n)).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self { n, theta, alpha, zetan, eta }
    }

    /// The next rank.
    pub fn next_rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

/// FNV-1a of the 8 bytes of `v`: YCSB's scrambling hash.
pub fn fnv1a64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How record numbers map onto keys: `records_per_hash_key` consecutive records share a hash
/// key (so a YCSB scan, which wingkv serves within one hash key, has rows to read).
#[derive(Debug, Clone, Copy)]
pub struct KeyLayout {
    /// Records under one hash key.
    pub records_per_hash_key: u64,
}

impl KeyLayout {
    /// The `(hash_key, sort_key)` of record `i`. Hash keys are hashed so that consecutive
    /// groups land on different partitions.
    pub fn key(&self, i: u64) -> (String, String) {
        let group = i / self.records_per_hash_key;
        (format!("user{:016x}", fnv1a64(group)), format!("f{:06}", i % self.records_per_hash_key))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let n = 10_000;
        let z = Zipfian::new(n, ZIPFIAN_THETA);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u64; n as usize];
        let draws = 200_000;
        for _ in 0..draws {
            let r = z.next_rank(&mut rng);
            assert!(r < n);
            counts[r as usize] += 1;
        }
        // Rank 0 of a theta-0.99 zipfian over 10k items draws ~10% of the picks; the top 1%
        // of ranks draw more than half.
        assert!(counts[0] > draws / 20, "rank 0 drew {}", counts[0]);
        let top: u64 = counts[..100].iter().sum();
        assert!(top > draws / 2, "top 1% drew {top}");
        assert!(counts[0] > counts[10] && counts[10] > counts[1000]);
    }

    #[test]
    fn scrambled_zipfian_reaches_every_record_and_keeps_hot_ones() {
        let n = 1_000u64;
        let c = KeyChooser::new(Distribution::Zipfian, n);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut counts = vec![0u64; n as usize];
        let draws = 200_000u64;
        for _ in 0..draws {
            counts[c.next(&mut rng) as usize] += 1;
        }
        let seen = counts.iter().filter(|c| **c > 0).count() as u64;
        assert!(seen >= n * 99 / 100, "only {seen} of {n} records picked");
        // YCSB's hottest item draws 1/zeta(10^10) ~ 3.8% of the picks.
        let hottest = counts.iter().copied().max().unwrap_or(0);
        assert!(hottest > draws / 50, "the hottest record drew only {hottest}");
    }

    #[test]
    fn uniform_covers_the_space_and_layout_groups_records() {
        let c = KeyChooser::new(Distribution::Uniform, 100);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = [false; 100];
        for _ in 0..10_000 {
            seen[c.next(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let l = KeyLayout { records_per_hash_key: 10 };
        assert_eq!(l.key(0).0, l.key(9).0);
        assert_ne!(l.key(9).0, l.key(10).0);
        assert_eq!(l.key(12).1, "f000002");
    }
}
