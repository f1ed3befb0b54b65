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

/// The image format a file's first bytes announce, if PNG or JPEG.
fn format_by_magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
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
    fn magic_bytes() {
        assert_eq!(format_by_magic(&png_header(1, 1)), Some("png"));
        assert_eq!(format_by_magic(&[0xFF, 0xD8, 0xFF]), Some("jpeg"));
        assert_eq!(format_by_magic(&[0xFF, 0xD8]), None);
        assert_eq!(format_by_magic(b"GIF89a"), None);
        assert_eq!(format_by_magic(b""), None);
    }
}
