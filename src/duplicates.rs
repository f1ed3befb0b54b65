//! Finds rows whose identity (job id) an earlier row already has, in
//! bounded memory and exactly. A first pass over the manifest keeps only
//! the ids' 64-bit hashes (a list, then for very large manifests a Bloom
//! filter): a hash seen once is certainly a new id, so a clean manifest is
//! read once. A hash seen twice (or that the filter may have seen) is a
//! suspect; a second pass then compares, for the suspect hashes only, the
//! ids themselves. No I/O: the caller reads the manifest (see `check`).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};

/// How an id is hashed (replaceable so tests can force collisions).
pub type IdHasher = fn(&str) -> u64;

/// SipHash with fixed keys: the same id hashes alike in both passes.
pub fn id_hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(id.as_bytes());
    hasher.finish()
}

/// The filter's size in 64-bit words: 16 MiB, whatever the manifest's
/// size, so memory stays bounded. At a few million ids a false suspect
/// (and with it a second pass) is rare; near ten million ids the second
/// pass becomes likely (see docs/decisions.md).
pub const FILTER_WORDS: usize = 1 << 21;
/// Words in a block: one 64-byte cache line, so a look-up costs one miss.
const BLOCK_WORDS: usize = 8;
/// Bits set per id, all in its block.
const BITS_PER_ID: u32 = 7;

/// A blocked Bloom filter of 64-bit hashes. The words are allocated
/// zeroed, so pages a small manifest never touches cost nothing.
struct Filter {
    words: Vec<u64>,
}

impl Filter {
    fn new(n_words: usize) -> Filter {
        let n_words = n_words.max(BLOCK_WORDS).next_multiple_of(BLOCK_WORDS);
        Filter {
            words: vec![0; n_words],
        }
    }

    /// Adds `hash`; returns whether it may have been added before.
    fn insert(&mut self, hash: u64) -> bool {
        let n_blocks = (self.words.len() / BLOCK_WORDS) as u64;
        // Multiply-shift maps the hash onto the blocks without a modulo.
        let block = ((u128::from(hash) * u128::from(n_blocks)) >> 64) as usize * BLOCK_WORDS;
        // The bit positions come from the hash mixed again (9 bits each).
        let mut bits = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        let mut seen = true;
        for _ in 0..BITS_PER_ID {
            let bit = (bits & 511) as usize;
            bits >>= 9;
            let (word, mask) = (block + bit / 64, 1u64 << (bit % 64));
            seen &= self.words[word] & mask != 0;
            self.words[word] |= mask;
        }
        seen
    }
}

/// The duplicate check of one pass over the manifest.
pub struct Duplicates {
    pass: Pass,
}

enum Pass {
    /// First pass: hashes only; finds the suspects, reports nothing.
    Hashes(Hashes),
    /// Second pass: the ids of the suspect hashes, with their first line.
    Exact {
        suspects: HashSet<u64>,
        first_lines: HashMap<String, u64>,
        hash: IdHasher,
    },
}

/// The first pass's record of the ids' hashes. They are appended to a
/// list, sorted once at the end and compared with their neighbours: no
/// random memory access a row, which the filter costs (a cache and TLB
/// miss; it showed in profiles). Past `max_listed` hashes the list is
/// poured into the filter, whose size is fixed, and the filter takes the
/// rest.
struct Hashes {
    listed: Vec<u64>,
    max_listed: usize,
    filter: Option<Filter>,
    filter_words: usize,
    suspects: HashSet<u64>,
    hash: IdHasher,
}

impl Hashes {
    fn add(&mut self, hashed: u64) {
        if self.filter.is_none() && self.listed.len() >= self.max_listed {
            let mut filter = Filter::new(self.filter_words);
            for listed in std::mem::take(&mut self.listed) {
                self.filter_one(&mut filter, listed);
            }
            self.filter = Some(filter);
        }
        match self.filter.take() {
            Some(mut filter) => {
                self.filter_one(&mut filter, hashed);
                self.filter = Some(filter);
            }
            None => self.listed.push(hashed),
        }
    }

    fn filter_one(&mut self, filter: &mut Filter, hashed: u64) {
        if filter.insert(hashed) {
            self.suspects.insert(hashed);
        }
    }

    /// Every hash that may belong to two rows.
    fn into_suspects(mut self) -> HashSet<u64> {
        self.listed.sort_unstable();
        let repeated = self.listed.windows(2).filter(|pair| pair[0] == pair[1]);
        self.suspects.extend(repeated.map(|pair| pair[0]));
        self.suspects
    }
}

/// Hashes listed before they go into the filter: 16 MiB, as much as the
/// filter, so a million rows never need it.
pub const MAX_LISTED: usize = 1 << 21;

impl Duplicates {
    /// A first pass, listing at most `max_listed` hashes before it uses a
    /// filter of `filter_words` words.
    pub fn first_pass(hash: IdHasher, max_listed: usize, filter_words: usize) -> Duplicates {
        Duplicates {
            pass: Pass::Hashes(Hashes {
                listed: Vec::new(),
                max_listed,
                filter: None,
                filter_words,
                suspects: HashSet::new(),
                hash,
            }),
        }
    }

    /// Takes the id of a valid row on `line`; returns the line of the
    /// earlier row with the same id, when there is one. The first pass
    /// never says so: it only notes suspects.
    pub fn check(&mut self, id: &str, line: u64) -> Option<u64> {
        match &mut self.pass {
            Pass::Hashes(hashes) => {
                hashes.add((hashes.hash)(id));
                None
            }
            Pass::Exact {
                suspects,
                first_lines,
                hash,
            } => {
                if !suspects.contains(&hash(id)) {
                    return None;
                }
                match first_lines.get(id) {
                    Some(first) => Some(*first),
                    None => {
                        first_lines.insert(id.to_owned(), line);
                        None
                    }
                }
            }
        }
    }

    /// After the first pass: the exact check a second pass needs, or
    /// `None` when no id can be a duplicate (the first pass's report
    /// stands). After a second pass, always `None`.
    pub fn second_pass(self) -> Option<Duplicates> {
        let Pass::Hashes(hashes) = self.pass else {
            return None;
        };
        let hash = hashes.hash;
        let suspects = hashes.into_suspects();
        (!suspects.is_empty()).then(|| Duplicates {
            pass: Pass::Exact {
                suspects,
                first_lines: HashMap::new(),
                hash,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs both passes over `ids` (line = index + 2) as `check` does:
    /// the duplicates found, as (line, first line).
    fn duplicates(
        ids: &[&str],
        hash: IdHasher,
        max_listed: usize,
        filter_words: usize,
    ) -> Vec<(u64, u64)> {
        let mut pass = Duplicates::first_pass(hash, max_listed, filter_words);
        let mut found = Vec::new();
        loop {
            found.clear();
            for (index, id) in ids.iter().enumerate() {
                let line = index as u64 + 2;
                if let Some(first) = pass.check(id, line) {
                    found.push((line, first));
                }
            }
            match pass.second_pass() {
                Some(next) => pass = next,
                None => return found,
            }
        }
    }

    /// First passes: hashes listed and sorted, poured into a filter
    /// after two, and filtered from the start.
    const PASSES: [(usize, usize); 3] = [(MAX_LISTED, FILTER_WORDS), (2, FILTER_WORDS), (0, 64)];

    #[test]
    fn distinct_ids_need_one_pass_and_repeats_are_found_with_their_first_line() {
        let distinct: Vec<String> = (0..10_000).map(|i| format!("row-{i}")).collect();
        for (max_listed, filter_words) in PASSES {
            let mut pass =
                Duplicates::first_pass(id_hash, max_listed, FILTER_WORDS.max(filter_words));
            for (index, id) in distinct.iter().enumerate() {
                assert_eq!(pass.check(id, index as u64), None);
            }
            assert!(pass.second_pass().is_none(), "no suspects: one pass");

            let ids = ["a", "b", "a", "c", "b", "a"];
            let found = duplicates(&ids, id_hash, max_listed, filter_words);
            assert_eq!(found, [(4, 2), (6, 3), (7, 2)]);
        }
    }

    #[test]
    fn colliding_hashes_are_told_apart_exactly() {
        for (max_listed, filter_words) in PASSES {
            // Every id hashes alike: each is a suspect, and only equal ids
            // are duplicates.
            let ids = ["a", "b", "c", "b", "a", "d"];
            let found = duplicates(&ids, |_| 42, max_listed, filter_words);
            assert_eq!(found, [(5, 3), (6, 2)]);
            // Two hashes only.
            let spread = |id: &str| u64::from(id.len().is_multiple_of(2));
            let ids = ["x", "yy", "z", "ww", "x", "v", "ww"];
            let found = duplicates(&ids, spread, max_listed, filter_words);
            assert_eq!(found, [(6, 2), (8, 5)]);
        }
        // A filter of one block, soon full of false suspects.
        let distinct: Vec<String> = (0..2_000).map(|i| format!("id-{i}")).collect();
        let ids: Vec<&str> = distinct.iter().map(String::as_str).collect();
        assert_eq!(duplicates(&ids, id_hash, 0, 8), []);
    }
}
