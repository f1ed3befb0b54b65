//! The shared-string table of an .xlsx workbook, kept in a temporary file
//! instead of memory: a million-row sheet of distinct prompts has millions
//! of strings, more than the whole memory budget. Strings are found by
//! position through a sparse index of block starts. The blocks used last
//! are kept, so a sheet that walks the table in order (as writers make it)
//! reads each block about once, even while every row also uses a few
//! strings from early in the table (a status, a resolution).

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

/// Strings per block: one index entry (8 bytes) per block keeps the index
/// at 1/8 byte per string, and a random lookup reads one block.
const BLOCK: usize = 64;

/// Blocks kept in memory (a few KB each for prompts).
const CACHED: usize = 16;

/// Builds the table, string by string, in the order of the workbook's.
pub(super) struct SharedStringsWriter {
    out: BufWriter<File>,
    starts: Vec<u64>,
    count: usize,
    written: u64,
}

impl SharedStringsWriter {
    pub(super) fn new() -> std::io::Result<SharedStringsWriter> {
        Ok(SharedStringsWriter {
            out: BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?),
            starts: Vec::new(),
            count: 0,
            written: 0,
        })
    }

    /// Appends the next string: a 4-byte length, then its UTF-8 bytes.
    pub(super) fn push(&mut self, text: &str) -> std::io::Result<()> {
        if self.count.is_multiple_of(BLOCK) {
            self.starts.push(self.written);
        }
        let length = u32::try_from(text.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a shared string over 4 GiB",
            )
        })?;
        self.out.write_all(&length.to_le_bytes())?;
        self.out.write_all(text.as_bytes())?;
        self.written += 4 + u64::from(length);
        self.count += 1;
        Ok(())
    }

    pub(super) fn finish(self) -> std::io::Result<SharedStrings> {
        let file = self.out.into_inner().map_err(|error| error.into_error())?;
        Ok(SharedStrings {
            file,
            starts: self.starts,
            count: self.count,
            end: self.written,
            cache: Vec::with_capacity(CACHED),
            clock: 0,
        })
    }
}

/// The table, read back by position.
pub(super) struct SharedStrings {
    file: File,
    /// Where each block of `BLOCK` strings starts in `file`.
    starts: Vec<u64>,
    count: usize,
    end: u64,
    /// The blocks used last, at most `CACHED`.
    cache: Vec<Block>,
    /// Counts lookups, to find the block used longest ago.
    clock: u64,
}

/// A block read from the file: its bytes and where each string is.
#[derive(Default)]
struct Block {
    number: Option<usize>,
    used: u64,
    bytes: Vec<u8>,
    /// (start, end) of each string in `bytes`.
    spans: Vec<(usize, usize)>,
}

impl SharedStrings {
    /// A table with no strings (a workbook without any).
    pub(super) fn empty() -> std::io::Result<SharedStrings> {
        SharedStringsWriter::new()?.finish()
    }

    /// The string at `index` (0-based, as cells number them).
    pub(super) fn get(&mut self, index: usize) -> Result<&str, String> {
        if index >= self.count {
            return Err(format!(
                "a cell refers to shared string {index}, but the table has {} strings",
                self.count
            ));
        }
        let number = index / BLOCK;
        self.clock += 1;
        let slot = match self
            .cache
            .iter()
            .position(|block| block.number == Some(number))
        {
            Some(slot) => slot,
            None => self
                .load(number)
                .map_err(|error| format!("cannot read the shared strings back: {error}"))?,
        };
        let block = &mut self.cache[slot];
        block.used = self.clock;
        let (start, end) = block.spans[index % BLOCK];
        std::str::from_utf8(&block.bytes[start..end])
            .map_err(|_| "a shared string read back is not UTF-8".to_owned())
    }

    /// Reads block `number` into the cache, in place of the block used
    /// longest ago when the cache is full, and says where it is.
    fn load(&mut self, number: usize) -> std::io::Result<usize> {
        let slot = if self.cache.len() < CACHED {
            self.cache.push(Block::default());
            self.cache.len() - 1
        } else {
            (0..self.cache.len())
                .min_by_key(|&slot| self.cache[slot].used)
                .unwrap_or(0)
        };
        let start = self.starts[number];
        let end = self.starts.get(number + 1).copied().unwrap_or(self.end);
        let strings = BLOCK.min(self.count - number * BLOCK);
        let block = &mut self.cache[slot];
        block.number = None;
        let length = usize::try_from(end - start).map_err(std::io::Error::other)?;
        block.bytes.clear();
        block.bytes.resize(length, 0);
        self.file.seek(SeekFrom::Start(start))?;
        self.file.read_exact(&mut block.bytes)?;
        block.spans.clear();
        let mut at = 0;
        while at < length {
            let prefix = block.bytes.get(at..at + 4).ok_or_else(damaged)?;
            let size = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            let begin = at + 4;
            at = begin + size as usize;
            if at > length {
                return Err(damaged());
            }
            block.spans.push((begin, at));
        }
        if block.spans.len() != strings {
            return Err(damaged());
        }
        // Give back a block grown by one very long string.
        if block.bytes.capacity() > 4 * 1024 * 1024 {
            block.bytes.shrink_to(length);
        }
        block.number = Some(number);
        Ok(slot)
    }
}

fn damaged() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the temporary file is damaged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(strings: &[String]) -> SharedStrings {
        let mut writer = SharedStringsWriter::new().unwrap();
        for text in strings {
            writer.push(text).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn strings_are_found_by_position_in_and_out_of_order() {
        // Far more strings than one block, of varied lengths (and empty ones).
        let strings: Vec<String> = (0..5 * BLOCK + 3)
            .map(|n| "é".repeat(n % 7) + &n.to_string())
            .collect();
        let mut table = table(&strings);
        for index in (0..strings.len())
            .chain((0..strings.len()).rev())
            .step_by(3)
        {
            assert_eq!(table.get(index).unwrap(), strings[index]);
        }
        assert_eq!(table.get(BLOCK * 5 + 2).unwrap(), strings[BLOCK * 5 + 2]);
        let missing = table.get(strings.len()).unwrap_err();
        assert!(missing.contains("has 323 strings"), "{missing}");
    }

    #[test]
    fn an_empty_table_refuses_every_index() {
        let mut table = SharedStrings::empty().unwrap();
        assert!(table.get(0).is_err());
    }
}
