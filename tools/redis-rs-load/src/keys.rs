//! Key names and values, the same bytes as redcore-load's, so that both
//! tools load the same keys (one prefill serves both) with the same values.

use std::ops::Range;

use rand::Rng;
use rand::rngs::SmallRng;

/// The key space: names of key numbers `0..keys`, and how a pipeline's
/// keys are drawn.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: Vec<u8>,
    keys: u64,
    /// Tagged layout: keys per hash tag. `None`: plain names.
    per_tag: Option<u64>,
}

impl KeySpace {
    /// Plain names, `PREFIXn`.
    pub fn plain(prefix: &str, keys: u64) -> KeySpace {
        KeySpace {
            prefix: prefix.as_bytes().to_vec(),
            keys,
            per_tag: None,
        }
    }

    /// Tagged names, `PREFIX{t}:n` with `t = n / per_tag`: the key space
    /// cut into at most `tags` runs of equal length (the last may be
    /// shorter), as redcore-load's `--key-layout tagged --key-tags`.
    pub fn tagged(prefix: &str, keys: u64, tags: u64) -> KeySpace {
        KeySpace {
            per_tag: Some(keys.div_ceil(tags.clamp(1, keys.max(1))).max(1)),
            ..KeySpace::plain(prefix, keys)
        }
    }

    /// How many keys there are.
    pub fn count(&self) -> u64 {
        self.keys
    }

    /// Keys per hash tag, in the tagged layout.
    pub fn per_tag(&self) -> Option<u64> {
        self.per_tag
    }

    /// Writes the name of key `i` into `out`.
    pub fn name(&self, i: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        let mut digits = itoa::Buffer::new();
        if let Some(per_tag) = self.per_tag {
            out.push(b'{');
            out.extend_from_slice(digits.format(i / per_tag).as_bytes());
            out.extend_from_slice(b"}:");
        }
        out.extend_from_slice(digits.format(i).as_bytes());
    }

    /// The key numbers sharing key `i`'s tag; `None` in the plain layout.
    fn tag_run(&self, i: u64) -> Option<Range<u64>> {
        let per_tag = self.per_tag?;
        let start = i / per_tag * per_tag;
        Some(start..(start + per_tag).min(self.keys))
    }

    /// Draws the key numbers of one pipeline into `out` (`n` of them):
    /// the first uniformly from the whole key space, the others uniformly
    /// from the first's tag run in the tagged layout (so every key of the
    /// pipeline is in one slot), from the whole space in the plain one.
    pub fn draw(&self, rng: &mut SmallRng, n: usize, out: &mut Vec<u64>) {
        out.clear();
        let first = rng.random_range(0..self.keys);
        out.push(first);
        let rest = self.tag_run(first).unwrap_or(0..self.keys);
        out.extend((1..n).map(|_| rng.random_range(rest.clone())));
    }
}

/// A value of `size` bytes: the bytes redcore-load writes (printable,
/// the same on every run).
pub fn filler(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| b'a' + (splitmix64(i as u64) % 26) as u8)
        .collect()
}

/// A fast, well-mixed hash of a 64-bit number (splitmix64's finaliser);
/// redcore-load's filler and task seeds use the same.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn name(k: &KeySpace, i: u64) -> String {
        let mut out = Vec::new();
        k.name(i, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn names_as_redcore_load_writes_them() {
        let plain = KeySpace::plain("key:", 100_000);
        assert_eq!(name(&plain, 12345), "key:12345");
        let tagged = KeySpace::tagged("key:", 100_000, 1024);
        assert_eq!(tagged.per_tag(), Some(98));
        assert_eq!(name(&tagged, 0), "key:{0}:0");
        assert_eq!(name(&tagged, 12345), "key:{125}:12345");
        assert_eq!(tagged.tag_run(99_999), Some(99_960..100_000));
        assert_eq!(KeySpace::tagged("k", 10, 3).per_tag(), Some(4));
        assert_eq!(KeySpace::tagged("k", 5, 100).per_tag(), Some(1));
        // redcore-load's values begin so too.
        assert_eq!(filler(32).len(), 32);
        assert!(filler(32).iter().all(u8::is_ascii_lowercase));
    }

    #[test]
    fn a_tagged_pipeline_keeps_one_tag() {
        let mut rng = SmallRng::seed_from_u64(7);
        let tagged = KeySpace::tagged("key:", 100_000, 1024);
        let mut keys = Vec::new();
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..100 {
            tagged.draw(&mut rng, 64, &mut keys);
            assert_eq!(keys.len(), 64);
            let tag = keys[0] / 98;
            assert!(
                keys.iter().all(|k| k / 98 == tag && *k < 100_000),
                "{keys:?}"
            );
            firsts.insert(tag);
        }
        assert!(firsts.len() > 50, "{firsts:?}");
        let plain = KeySpace::plain("key:", 100_000);
        plain.draw(&mut rng, 64, &mut keys);
        let runs: std::collections::BTreeSet<u64> = keys.iter().map(|k| k / 98).collect();
        assert!(runs.len() > 32, "{keys:?}");
    }
}
