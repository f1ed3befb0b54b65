//! Finds rows whose identity (job id) an earlier row already has, in a
//! fixed amount of memory and exactly. A first pass over the manifest
//! keeps only a Bloom filter of the ids' 64-bit hashes: an id it has not
//! seen is certainly new, so a clean manifest is read once. An id it may
//! have seen makes the id's hash a suspect; a second pass then compares,
//! for the suspect hashes only, the ids themselves. No I/O: the caller
//! reads the manifest (see `check`).

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
/// size, so memory stays bounded. At a million ids a false suspect (and
/// with it a second pass) is about a one-in-a-million event; near ten
/// million ids the second pass becomes likely (see docs/decisions.md).
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
    Filtered {
        filter: Filter,
        suspects: HashSet<u64>,
        hash: IdHasher,
    },
    /// Second pass: the ids of the suspect hashes, with their first line.
    Exact {
        suspects: HashSet<u64>,
        first_lines: HashMap<String, u64>,
        hash: IdHasher,
    },
}

impl Duplicates {
    /// A first pass, with a filter of `filter_words` words.
    pub fn first_pass(hash: IdHasher, filter_words: usize) -> Duplicates {
        Duplicates {
            pass: Pass::Filtered {
                filter: Filter::new(filter_words),
                suspects: HashSet::new(),
                hash,
            },
        }
    }

    /// Takes the id of a valid row on `line`; returns the line of the
    /// earlier row with the same id, when there is one. The first pass
    /// never says so: it only notes suspects.
    pub fn check(&mut self, id: &str, line: u64) -> Option<u64> {
        match &mut self.pass {
            Pass::Filtered {
                filter,
                suspects,
                hash,
            } => {
                let hashed = hash(id);
                if filter.insert(hashed) {
                    suspects.insert(hashed);
                }
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
        match self.pass {
            Pass::Filtered { suspects, hash, .. } if !suspects.is_empty() => Some(Duplicates {
                pass: Pass::Exact {
                    suspects,
                    first_lines: HashMap::new(),
                    hash,
                },
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs both passes over `ids` (line = index + 2) as `check` does:
    /// the duplicates found, as (line, first line).
    fn duplicates(ids: &[&str], hash: IdHasher, filter_words: usize) -> Vec<(u64, u64)> {
        let mut pass = Duplicates::first_pass(hash, filter_words);
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

    #[test]
    fn distinct_ids_need_one_pass_and_repeats_are_found_with_their_first_line() {
        let distinct: Vec<String> = (0..10_000).map(|i| format!("row-{i}")).collect();
        let ids: Vec<&str> = distinct.iter().map(String::as_str).collect();
        let mut pass = Duplicates::first_pass(id_hash, FILTER_WORDS);
        for (index, id) in ids.iter().enumerate() {
            assert_eq!(pass.check(id, index as u64), None);
        }
        assert!(pass.second_pass().is_none(), "no suspects: one pass");

        let ids = ["a", "b", "a", "c", "b", "a"];
        assert_eq!(
            duplicates(&ids, id_hash, FILTER_WORDS),
            [(4, 2), (6, 3), (7, 2)]
        );
    }

    #[test]
    fn colliding_hashes_are_told_apart_exactly() {
        // Every id hashes alike: each is a suspect, and only equal ids
        // are duplicates.
        let ids = ["a", "b", "c", "b", "a", "d"];
        assert_eq!(duplicates(&ids, |_| 42, FILTER_WORDS), [(5, 3), (6, 2)]);
        // Two hashes only, and a filter of one block that is soon full of
        // false suspects.
        let spread = |id: &str| u64::from(id.len() % 2 == 0);
        let ids = ["x", "yy", "z", "ww", "x", "v", "ww"];
        assert_eq!(duplicates(&ids, spread, 1), [(6, 2), (8, 5)]);
        let distinct: Vec<String> = (0..2_000).map(|i| format!("id-{i}")).collect();
        let ids: Vec<&str> = distinct.iter().map(String::as_str).collect();
        assert_eq!(duplicates(&ids, id_hash, 8), []);
    }
}
