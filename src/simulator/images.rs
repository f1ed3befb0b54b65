//! Test images served at `GET /test-images/{name}`, one of each kind an
//! image check must tell apart: good PNGs and JPEGs (with and without an
//! extension), too small, too wide, too tall, too long, not PNG/JPEG, not
//! an image at all, empty, missing. PNGs are real pictures (a gradient,
//! stored uncompressed); JPEGs carry a true frame header but no picture.
//! Nothing is stored: each is generated when asked for, and the bytes past
//! a picture's end (for `huge.png`) are zeros streamed as they are sent.
//! Ranges (`bytes=START-END`) are honoured; the `norange-` prefix on a
//! name serves the same image ignoring them, and `redirect-` redirects to
//! it.

/// Image lengths past this are refused by the provider ("file ≤ 10 MB").
const TOO_LONG: u64 = 11 * 1024 * 1024;

/// One test image: its bytes up to `head.len()`, zeros after, `len` in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TestImage {
    pub(super) head: Vec<u8>,
    pub(super) len: u64,
    /// Whether the answer leaves out `Content-Length` (sent chunked).
    pub(super) no_length: bool,
    /// The bytes sent before the image stops for `STALL`, if it does.
    pub(super) stalls_after: Option<u64>,
    /// What the provider sees in it: format, width, height.
    pub(super) seen: Option<(&'static str, u32, u32)>,
}

/// Every name served, with what it is (the simulator's README table).
pub const TEST_IMAGES: [(&str, &str); 16] = [
    ("good.png", "a 640x480 PNG"),
    ("good.jpg", "an 800x600 JPEG"),
    (
        "photo-123",
        "a 1024x768 PNG without an extension (a CDN transform)",
    ),
    (
        "exif.jpg",
        "a 1200x800 JPEG whose frame header is 200 KiB in, after EXIF-like segments",
    ),
    ("no-length.png", "a 640x480 PNG sent without Content-Length"),
    (
        "slow.png",
        "a 640x480 PNG that stops for 60 s after its first 8 bytes",
    ),
    (
        "slow-tail.png",
        "a 640x480 PNG of 5 MiB, sent without Content-Length, that stops for 60 s after its header",
    ),
    ("small.png", "a 200x200 PNG: too small"),
    ("wide.jpg", "a 2000x400 JPEG: wider than 2.5:1"),
    ("tall.png", "a 400x1200 PNG: taller than 1:2.5"),
    ("huge.png", "a 1000x1000 PNG padded to 11 MiB: over 10 MB"),
    ("animation", "a GIF without an extension"),
    ("page", "an HTML page without an extension: not an image"),
    ("fake.png", "an HTML page named .png"),
    ("empty.png", "zero bytes"),
    ("missing.png", "404, as is any other name"),
];

/// The test image called `name` (without any `norange-` prefix).
pub(super) fn test_image(name: &str) -> Option<TestImage> {
    let image = |head: Vec<u8>, seen| TestImage {
        len: head.len() as u64,
        head,
        no_length: false,
        stalls_after: None,
        seen,
    };
    let html = b"<!doctype html><title>Not found</title><p>Try the gallery.</p>".to_vec();
    Some(match name {
        "good.png" => image(png(640, 480), Some(("png", 640, 480))),
        "good.jpg" => image(jpeg(800, 600, 0), Some(("jpeg", 800, 600))),
        "photo-123" => image(png(1024, 768), Some(("png", 1024, 768))),
        "exif.jpg" => image(jpeg(1200, 800, 200 * 1024), Some(("jpeg", 1200, 800))),
        "no-length.png" => TestImage {
            no_length: true,
            ..image(png(640, 480), Some(("png", 640, 480)))
        },
        "slow.png" => TestImage {
            stalls_after: Some(8),
            ..image(png(640, 480), Some(("png", 640, 480)))
        },
        "slow-tail.png" => {
            let head = png(640, 480);
            TestImage {
                stalls_after: Some(head.len() as u64),
                no_length: true,
                len: 5 * 1024 * 1024,
                ..image(head, Some(("png", 640, 480)))
            }
        }
        "small.png" => image(png(200, 200), Some(("png", 200, 200))),
        "wide.jpg" => image(jpeg(2000, 400, 0), Some(("jpeg", 2000, 400))),
        "tall.png" => image(png(400, 1200), Some(("png", 400, 1200))),
        "huge.png" => TestImage {
            len: TOO_LONG,
            ..image(png(1000, 1000), Some(("png", 1000, 1000)))
        },
        "animation" => image(gif(), Some(("gif", 1, 1))),
        "page" | "fake.png" => image(html, None),
        "empty.png" => image(Vec::new(), None),
        _ => return None,
    })
}

/// A range asked for with `Range: bytes=START-END` (or `START-`), within
/// an image of `len` bytes: the first and last byte, inclusive.
pub(super) fn byte_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let (start, end) = header.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => len.saturating_sub(1),
        end => end.parse::<u64>().ok()?.min(len.saturating_sub(1)),
    };
    (start <= end && start < len).then_some((start, end))
}

/// How long `slow.png` stops after its first bytes.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The bytes `start..=end` of `image`, in chunks, the zeros past its head
/// made as they are sent; an image that stalls sends its first bytes
/// alone, then nothing for `STALL`.
pub(super) fn chunks(
    image: TestImage,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    use futures::StreamExt;
    const CHUNK: u64 = 64 * 1024;
    let stall_at = image.stalls_after.filter(|&at| start == 0 && end >= at);
    let stalls = stall_at.is_some();
    let mut pieces = Vec::new();
    let mut from = start;
    if let Some(at) = stall_at {
        pieces.push((0, at - 1));
        from = at;
    }
    while from <= end {
        let to = (from + CHUNK - 1).min(end);
        pieces.push((from, to));
        from = to + 1;
    }
    let image = std::sync::Arc::new(image);
    futures::stream::iter(pieces.into_iter().enumerate()).then(move |(idx, (from, to))| {
        let image = image.clone();
        async move {
            if stalls && idx == 1 {
                tokio::time::sleep(STALL).await;
            }
            let head = &image.head;
            let mut chunk = Vec::with_capacity((to - from + 1) as usize);
            if from < head.len() as u64 {
                let head_end = to.min(head.len() as u64 - 1) as usize;
                chunk.extend_from_slice(&head[from as usize..=head_end]);
            }
            chunk.resize((to - from + 1) as usize, 0);
            Ok(chunk)
        }
    })
}

/// A real PNG: an RGB gradient, stored (not compressed) in its zlib stream.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity((height * (1 + 3 * width)) as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 160]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (idx, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(idx + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &zlib), (b"IEND", &Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// A JPEG's markers up to its frame header (after `padding` bytes of
/// application segments), and its end: the dimensions are true, the
/// picture is absent.
fn jpeg(width: u32, height: u32, padding: usize) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[
        0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    let mut left = padding;
    while left > 0 {
        let len = left.min(65_533);
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((len + 2) as u16).to_be_bytes());
        out.resize(out.len() + len, b'x');
        left -= len;
    }
    out.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
    out.extend_from_slice(&(height as u16).to_be_bytes());
    out.extend_from_slice(&(width as u16).to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A one-pixel GIF.
fn gif() -> Vec<u8> {
    let mut out = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    out.extend_from_slice(b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;");
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for byte in bytes {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_image_but_the_missing_one_is_served() {
        for (name, _) in TEST_IMAGES {
            assert_eq!(test_image(name).is_some(), name != "missing.png", "{name}");
        }
    }

    #[test]
    fn the_images_say_what_they_are() {
        for (name, _) in TEST_IMAGES {
            let Some(image) = test_image(name) else {
                continue;
            };
            let Some((format, width, height)) = image.seen else {
                continue;
            };
            if format == "gif" {
                continue;
            }
            let size = imagesize::blob_size(&image.head).unwrap();
            assert_eq!(
                (size.width as u32, size.height as u32),
                (width, height),
                "{name}"
            );
        }
        assert_eq!(crc32(b"IEND"), 0xAE42_6082, "the well-known IEND checksum");
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn ranges_are_clamped_to_the_image() {
        assert_eq!(byte_range("bytes=0-65535", 1000), Some((0, 999)));
        assert_eq!(byte_range("bytes=10-19", 1000), Some((10, 19)));
        assert_eq!(byte_range("bytes=10-", 1000), Some((10, 999)));
        assert_eq!(byte_range("bytes=1000-", 1000), None);
        assert_eq!(byte_range("bytes=0-10", 0), None);
        assert_eq!(byte_range("items=0-1", 10), None);
    }

    #[tokio::test]
    async fn the_zeros_past_the_head_are_made_as_they_are_sent() {
        use futures::StreamExt;
        let image = test_image("huge.png").unwrap();
        let head = image.head.clone();
        let bytes: Vec<u8> = chunks(image, 0, head.len() as u64 + 99)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(&bytes[..head.len()], head.as_slice());
        assert_eq!(bytes.len(), head.len() + 100);
        assert!(bytes[head.len()..].iter().all(|byte| *byte == 0));
    }
}
