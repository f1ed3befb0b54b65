//! A text manifest's bytes as UTF-8: the byte-order mark read, UTF-16 and
//! legacy encodings decoded as the file streams in, and what the CSV line
//! counter needs to know about the end of the stream.

use std::fs::File;
use std::io::{Cursor, Read};

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};
use encoding_rs_io::DecodeReaderBytesBuilder;

/// How the file's bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoding {
    /// Read as they are: UTF-8 (with or without a byte-order mark), each
    /// cell checked by the reader.
    Utf8,
    /// Decoded to UTF-8 by `encoding_rs` (UTF-16 by its byte-order mark, or
    /// the encoding the user named); nothing is left to check.
    Decoded(&'static Encoding),
}

/// The byte-order mark a file starts with, if any.
pub(super) fn byte_order_mark(head: &[u8]) -> Option<&'static Encoding> {
    Encoding::for_bom(head).map(|(encoding, _)| encoding)
}

/// Decides how to read a file that starts with `head`: a byte-order mark
/// wins over `--encoding`, as it does in spreadsheet programs.
pub(super) fn decoding(head: &[u8], requested: Option<&'static Encoding>) -> Decoding {
    match byte_order_mark(head).or(requested) {
        None => Decoding::Utf8,
        Some(encoding) if encoding == UTF_8 => Decoding::Utf8,
        Some(encoding) => Decoding::Decoded(encoding),
    }
}

/// The UTF-16 encoding a file without a byte-order mark seems to be in:
/// text that is mostly ASCII has a zero in every other byte.
pub(super) fn looks_like_bomless_utf16(head: &[u8]) -> Option<&'static Encoding> {
    let pairs = head.len() / 2;
    if pairs < 2 {
        return None;
    }
    let zeros_at = |offset: usize| {
        head.chunks_exact(2)
            .filter(|pair| pair[offset] == 0)
            .count()
    };
    let (even, odd) = (zeros_at(0), zeros_at(1));
    if odd * 2 >= pairs && even == 0 {
        Some(UTF_16LE)
    } else if even * 2 >= pairs && odd == 0 {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// A manifest's text as a stream of UTF-8 (or, for `Decoding::Utf8`,
/// hopefully UTF-8) bytes.
pub(super) fn open_text(file: File, decoding: Decoding) -> Counted {
    let inner: Box<dyn Read + Send> = match decoding {
        Decoding::Utf8 => Box::new(file),
        Decoding::Decoded(encoding) => Box::new(
            DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .build(file),
        ),
    };
    Counted {
        inner,
        n_bytes: 0,
        at_end: false,
        last_byte: None,
    }
}

/// Passes a stream through and remembers how it ended: how many bytes it
/// gave, whether it has given its last, and what that last byte was. The
/// CSV reader's line numbers depend on whether the last record had a line
/// break, which for decoded text is known only when the stream ends.
pub(super) struct Counted {
    inner: Box<dyn Read + Send>,
    n_bytes: u64,
    at_end: bool,
    last_byte: Option<u8>,
}

impl Counted {
    /// Whether a reader that has read `position` bytes is at the end of a
    /// stream whose last line has no line break.
    pub(super) fn ends_without_newline_at(&self, position: u64) -> bool {
        self.at_end && position >= self.n_bytes && self.last_byte != Some(b'\n')
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n_read = self.inner.read(buf)?;
        if n_read == 0 {
            self.at_end |= !buf.is_empty();
        } else {
            self.n_bytes += n_read as u64;
            self.last_byte = Some(buf[n_read - 1]);
        }
        Ok(n_read)
    }
}

/// A text stream whose first line was read ahead (to find the delimiter)
/// and is given back first.
pub(super) type TextStream = std::io::Chain<Cursor<Vec<u8>>, Counted>;

/// The longest first line read ahead to find the delimiter.
const MAX_HEADER_PEEK: usize = 1024 * 1024;

/// Reads the stream's first line (up to a line break outside quotes, or
/// `MAX_HEADER_PEEK` bytes) and returns it with the whole stream.
pub(super) fn peek_first_line(mut counted: Counted) -> std::io::Result<(Vec<u8>, TextStream)> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut in_quotes = false;
    let mut scanned = 0;
    let line_end = loop {
        if let Some(end) = head[scanned..].iter().position(|&byte| {
            if byte == b'"' {
                in_quotes = !in_quotes;
            }
            !in_quotes && (byte == b'\n' || byte == b'\r')
        }) {
            break scanned + end;
        }
        scanned = head.len();
        if head.len() >= MAX_HEADER_PEEK {
            break head.len();
        }
        let n_read = counted.read(&mut chunk)?;
        if n_read == 0 {
            break head.len();
        }
        head.extend_from_slice(&chunk[..n_read]);
    };
    let first_line = head[..line_end].to_vec();
    Ok((first_line, Cursor::new(head).chain(counted)))
}

/// The delimiter a header line uses: whichever of comma, semicolon and tab
/// it has most of outside quotes (comma on a tie), or `default` when it has
/// none (a one-column file).
pub(super) fn detect_delimiter(header_line: &[u8], default: u8) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut in_quotes = false;
    for &byte in header_line {
        if byte == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && let Some(count) = counts.iter_mut().find(|(d, _)| *d == byte) {
            count.1 += 1;
        }
    }
    let (delimiter, count) = counts.into_iter().fold((default, 0), |best, candidate| {
        if candidate.1 > best.1 {
            candidate
        } else {
            best
        }
    });
    if count == 0 { default } else { delimiter }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_is_the_one_the_header_uses_most() {
        for (line, default, expected) in [
            (&b"image,prompt,duration"[..], b',', b','),
            (b"image;prompt;duration", b',', b';'),
            (b"image\tprompt\tduration", b',', b'\t'),
            (b"\"a;b\",c", b',', b','),
            (b"\"Prompt, long\";Image", b',', b';'),
            (b"prompt", b'\t', b'\t'),
            (b"prompt", b',', b','),
            (b"a,b;c", b',', b','),
        ] {
            assert_eq!(
                detect_delimiter(line, default) as char,
                expected as char,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn byte_order_marks_and_bomless_utf16_are_recognised() {
        assert_eq!(decoding(b"\xEF\xBB\xBFid", None), Decoding::Utf8);
        assert_eq!(decoding(b"\xFF\xFEi\0", None), Decoding::Decoded(UTF_16LE));
        assert_eq!(decoding(b"\xFE\xFF\0i", None), Decoding::Decoded(UTF_16BE));
        let windows = Encoding::for_label(b"windows-1252");
        assert_eq!(
            decoding(b"id", windows),
            Decoding::Decoded(windows.unwrap())
        );
        assert_eq!(
            decoding(b"\xFF\xFEi\0", windows),
            Decoding::Decoded(UTF_16LE)
        );
        assert_eq!(looks_like_bomless_utf16(b"i\0d\0,\0"), Some(UTF_16LE));
        assert_eq!(looks_like_bomless_utf16(b"\0i\0d\0,"), Some(UTF_16BE));
        assert_eq!(looks_like_bomless_utf16(b"id,prompt"), None);
    }
}
