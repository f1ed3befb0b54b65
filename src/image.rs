//! Reads what a local image file's header says: its format (by magic bytes),
//! dimensions and byte length. This is the only place validation's image
//! checks touch the file system; `validate` gets an `ImageProbe` and applies
//! the API's rules to what it reports.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A broken image rule: a short stable rule name and a message.
pub type ProbeError = (&'static str, String);

/// What the file's header says about a local image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: &'static str,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
}

/// Finds out a local image's format, size and dimensions. Errors are the
/// `image-file` and `image-format` rules.
pub trait ImageProbe: Send + Sync {
    fn probe(&self, path: &Path) -> Result<ImageInfo, ProbeError>;
}

/// Reads images from the file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileProbe;

impl ImageProbe for FileProbe {
    fn probe(&self, path: &Path) -> Result<ImageInfo, ProbeError> {
        read_image_info(path)
    }
}

/// Reads a local image's format, size and dimensions from its header.
pub fn read_image_info(path: &Path) -> Result<ImageInfo, ProbeError> {
    let missing = |error: std::io::Error| {
        (
            "image-file",
            format!("cannot read {}: {error}", path.display()),
        )
    };
    let metadata = std::fs::metadata(path).map_err(missing)?;
    if !metadata.is_file() {
        return Err(("image-file", format!("{} is not a file", path.display())));
    }
    let mut magic = [0u8; 8];
    let n_read = File::open(path)
        .and_then(|mut file| file.read(&mut magic))
        .map_err(missing)?;
    let format = format_by_magic(&magic[..n_read]).ok_or_else(|| {
        (
            "image-format",
            format!(
                "{} is not a PNG or JPEG file (checked its first bytes)",
                path.display()
            ),
        )
    })?;
    let size = imagesize::size(path).map_err(|error| {
        (
            "image-format",
            format!("cannot read the dimensions of {}: {error}", path.display()),
        )
    })?;
    let dimension = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(ImageInfo {
        format,
        bytes: metadata.len(),
        width: dimension(size.width),
        height: dimension(size.height),
    })
}

/// What a remote image's first bytes say, as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRead {
    /// The format and dimensions are known.
    Complete {
        format: &'static str,
        width: u32,
        height: u32,
    },
    /// A PNG or JPEG whose dimensions lie further in: read more.
    NeedMore,
    /// Not a PNG or JPEG, or a broken one: the `image-format` message.
    Refused(String),
}

/// Reads the format (by magic bytes) and dimensions from the first bytes
/// of an image, as many as have arrived so far.
pub fn read_header(head: &[u8]) -> HeaderRead {
    let Some(format) = format_by_magic(head) else {
        return if head.len() < PNG_MAGIC.len() && PNG_MAGIC.starts_with(head)
            || head.len() < JPEG_MAGIC.len() && JPEG_MAGIC.starts_with(head)
        {
            HeaderRead::NeedMore
        } else {
            HeaderRead::Refused(
                "it is not a PNG or JPEG image (checked its first bytes)".to_owned(),
            )
        };
    };
    match imagesize::blob_size(head) {
        Ok(size) => HeaderRead::Complete {
            format,
            width: u32::try_from(size.width).unwrap_or(u32::MAX),
            height: u32::try_from(size.height).unwrap_or(u32::MAX),
        },
        // The bytes ran out before the dimensions.
        Err(imagesize::ImageError::IoError(_)) => HeaderRead::NeedMore,
        Err(error) => HeaderRead::Refused(format!("cannot read its dimensions: {error}")),
    }
}

/// What checking a remote image found: its header, or why it could not be
/// read. The API's rules are applied to it by `validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteImage {
    /// The header was read. `bytes` is `None` when the server did not say
    /// how long the image is.
    Read {
        format: &'static str,
        bytes: Option<u64>,
        width: u32,
        height: u32,
    },
    /// Unreachable, or not a readable PNG/JPEG (`image-unreachable`,
    /// `image-format`).
    Unreadable { rule: &'static str, message: String },
}

/// The rules a `RemoteImage::Unreadable` can carry.
pub const UNREADABLE_RULES: [&str; 2] = ["image-unreachable", "image-format"];

impl RemoteImage {
    /// Rebuilds a stored finding: the format and rule names as `&'static
    /// str` (an unknown stored name reads as unreadable, so it is checked
    /// again).
    pub fn from_stored(
        rule: Option<(String, String)>,
        format: Option<String>,
        bytes: Option<u64>,
        width: u32,
        height: u32,
    ) -> RemoteImage {
        let format =
            format.and_then(|name| ["png", "jpeg"].into_iter().find(|known| *known == name));
        match (rule, format) {
            (None, Some(format)) => RemoteImage::Read {
                format,
                bytes,
                width,
                height,
            },
            (Some((rule, message)), _) => RemoteImage::Unreadable {
                rule: UNREADABLE_RULES
                    .into_iter()
                    .find(|known| *known == rule)
                    .unwrap_or("image-unreachable"),
                message,
            },
            (None, None) => RemoteImage::Unreadable {
                rule: "image-unreachable",
                message: "the stored check could not be read".to_owned(),
            },
        }
    }
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];

/// The image format a file's first bytes announce, if PNG or JPEG.
fn format_by_magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(PNG_MAGIC) {
        Some("png")
    } else if head.starts_with(JPEG_MAGIC) {
        Some("jpeg")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(width: u32, height: u32) -> Vec<u8> {
        // A PNG signature and IHDR chunk are all a header reader needs.
        let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    fn rule(result: Result<ImageInfo, ProbeError>) -> &'static str {
        result.expect_err("the probe should refuse this").0
    }

    #[test]
    fn a_png_header_gives_format_dimensions_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let bytes = png_header(640, 360);
        std::fs::write(&path, &bytes).unwrap();
        let info = FileProbe.probe(&path).unwrap();
        assert_eq!(
            info,
            ImageInfo {
                format: "png",
                bytes: bytes.len() as u64,
                width: 640,
                height: 360,
            }
        );
    }

    #[test]
    fn the_format_comes_from_the_content_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.png");
        std::fs::write(&fake, b"GIF89a....").unwrap();
        assert_eq!(rule(FileProbe.probe(&fake)), "image-format");
        let short = dir.path().join("short.png");
        std::fs::write(&short, b"\x89P").unwrap();
        assert_eq!(rule(FileProbe.probe(&short)), "image-format");
        // JPEG magic without a readable frame header: the format is known,
        // the dimensions are not.
        let jpeg = dir.path().join("broken.jpg");
        std::fs::write(&jpeg, [0xFF, 0xD8, 0xFF, 0xE0, 0, 0]).unwrap();
        assert_eq!(rule(FileProbe.probe(&jpeg)), "image-format");
    }

    #[test]
    fn missing_files_and_folders_are_not_images() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            rule(FileProbe.probe(&dir.path().join("missing.png"))),
            "image-file"
        );
        assert_eq!(rule(FileProbe.probe(dir.path())), "image-file");
    }

    #[test]
    fn a_header_is_read_as_far_as_it_has_arrived() {
        let png = png_header(640, 360);
        for cut in [0, 1, 5, 8, 12, 20] {
            assert_eq!(read_header(&png[..cut]), HeaderRead::NeedMore, "{cut}");
        }
        assert_eq!(
            read_header(&png),
            HeaderRead::Complete {
                format: "png",
                width: 640,
                height: 360
            }
        );
        // A JPEG with a long APP1 segment before its frame header.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF];
        jpeg.extend(std::iter::repeat_n(0u8, 0xFFFD));
        let before_frame = jpeg.len();
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8, 0x01, 0x2C, 0x02, 0x58, 3]);
        jpeg.extend(std::iter::repeat_n(0u8, 15));
        assert_eq!(read_header(&jpeg[..before_frame]), HeaderRead::NeedMore);
        assert_eq!(
            read_header(&jpeg),
            HeaderRead::Complete {
                format: "jpeg",
                width: 600,
                height: 300
            }
        );
        assert!(matches!(read_header(b"GIF89a..."), HeaderRead::Refused(_)));
        assert!(matches!(read_header(b"<html>"), HeaderRead::Refused(_)));
        let mut broken = vec![0xFF, 0xD8, 0xFF, 0x00, 0x00, 0x02, 0x12, 0x34];
        broken.resize(64, 0);
        assert!(matches!(read_header(&broken), HeaderRead::Refused(_)));
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(format_by_magic(&png_header(1, 1)), Some("png"));
        assert_eq!(format_by_magic(&[0xFF, 0xD8, 0xFF]), Some("jpeg"));
        assert_eq!(format_by_magic(&[0xFF, 0xD8]), None);
        assert_eq!(format_by_magic(b"GIF89a"), None);
        assert_eq!(format_by_magic(b""), None);
    }
}
