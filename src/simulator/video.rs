//! The stand-in videos the simulator serves: a real one-second clip that
//! plays in a browser, made unique per task and padded to the length asked.

use axum::body::Bytes;

use crate::job::hex_sha256;

/// A 64×64, one-second, 8 frames a second H.264 (baseline) MP4 with its
/// `moov` box first, so a browser reads its metadata from the first bytes.
/// 4,042 bytes, made once with ffmpeg 5.1.9 (Debian 12) and committed:
///
/// ```text
/// ffmpeg -f lavfi -i "testsrc2=size=64x64:rate=8:duration=1" -c:v libx264 \
///   -profile:v baseline -pix_fmt yuv420p -preset veryslow -crf 30 \
///   -x264-params keyint=8 -movflags +faststart -map_metadata -1 \
///   -fflags +bitexact -flags:v +bitexact -an clip.mp4
/// ```
pub const CLIP: &[u8] = include_bytes!("clip.mp4");

/// The padding repeats after this many bytes, so a video of any size is
/// served from one block made per request: constant memory, no copying.
/// Videos up to about 1 MiB are byte for byte what they were when the
/// whole padding was random.
const PATTERN_LEN: u64 = 1 << 20;

/// The most bytes one served chunk holds.
const CHUNK_LEN: u64 = 256 * 1024;

/// A deterministic stand-in video for a task: `CLIP` followed by a `free`
/// box (which players skip) holding the task id and bytes derived from it,
/// so every task's video has its own checksum. The box fills the video to
/// the length asked; a shorter length gives the shortest such video, the
/// clip and a box holding the id (about 4.1 KB).
///
/// Only the head (clip, box header, label) and one block of padding are
/// held; the bytes are served as slices of those two (`chunks`).
#[derive(Debug, Clone)]
pub struct Video {
    head: Bytes,
    pattern: Bytes,
    len: u64,
}

impl Video {
    pub fn new(task_id: &str, len: u64) -> Video {
        let label = placeholder_label(task_id);
        let min_box = 8 + label.len() as u64;
        let box_len = len.saturating_sub(CLIP.len() as u64).max(min_box);
        let mut head = Vec::with_capacity(CLIP.len() + 16 + label.len());
        head.extend_from_slice(CLIP);
        match u32::try_from(box_len) {
            Ok(size) => {
                head.extend_from_slice(&size.to_be_bytes());
                head.extend_from_slice(b"free");
            }
            // A box over 4 GiB gives its size in a 64-bit field after the type.
            Err(_) => {
                head.extend_from_slice(&1u32.to_be_bytes());
                head.extend_from_slice(b"free");
                head.extend_from_slice(&box_len.to_be_bytes());
            }
        }
        head.extend_from_slice(label.as_bytes());
        let len = CLIP.len() as u64 + box_len;
        let padding = len.saturating_sub(head.len() as u64);
        Video {
            pattern: padding_pattern(task_id, padding.min(PATTERN_LEN)),
            head: Bytes::from(head),
            len,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `start..end` (clamped to the video), as slices of the
    /// head and the padding block, none over `CHUNK_LEN`.
    pub fn chunks(&self, start: u64, end: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
        let video = self.clone();
        let end = end.min(self.len);
        let mut at = start;
        std::iter::from_fn(move || {
            let chunk = video.chunk_at(at, end)?;
            at += chunk.len() as u64;
            Some(chunk)
        })
    }

    /// The chunk starting at `at`, up to `end`; `None` at the end.
    fn chunk_at(&self, at: u64, end: u64) -> Option<Bytes> {
        let head_len = self.head.len() as u64;
        if at >= end {
            return None;
        }
        if at < head_len {
            return Some(self.head.slice(at as usize..end.min(head_len) as usize));
        }
        if self.pattern.is_empty() {
            return None;
        }
        let offset = (at - head_len) % self.pattern.len() as u64;
        let n = (self.pattern.len() as u64 - offset)
            .min(CHUNK_LEN)
            .min(end - at);
        Some(self.pattern.slice(offset as usize..(offset + n) as usize))
    }

    /// The whole video in memory (for small videos and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.range_to_vec(0, self.len)
    }

    /// The bytes `start..end` in memory.
    pub fn range_to_vec(&self, start: u64, end: u64) -> Vec<u8> {
        self.chunks(start, end).flatten().collect()
    }
}

/// The whole video for a task, in memory: see `Video`.
pub fn video_content(task_id: &str, len: usize) -> Vec<u8> {
    Video::new(task_id, len as u64).to_vec()
}

/// `len` bytes derived from the task id, the same bytes whatever the
/// video's length.
fn padding_pattern(task_id: &str, len: u64) -> Bytes {
    let seed = u64::from_str_radix(&hex_sha256(task_id.as_bytes())[..16], 16).unwrap_or(0);
    let mut rng = fastrand::Rng::with_seed(seed);
    std::iter::repeat_with(|| rng.u8(..))
        .take(len as usize)
        .collect::<Vec<u8>>()
        .into()
}

fn placeholder_label(task_id: &str) -> String {
    format!("pixbatch simulator placeholder video for task {task_id}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min_video_len(task_id: &str) -> usize {
        CLIP.len() + 8 + placeholder_label(task_id).len()
    }

    #[test]
    fn videos_are_deterministic_per_task() {
        assert_eq!(video_content("a", 10_000), video_content("a", 10_000));
        assert_ne!(video_content("a", 10_000), video_content("b", 10_000));
        assert_eq!(video_content("a", 10_000).len(), 10_000);
        assert_eq!(video_content("a", 200_000).len(), 200_000);
    }

    #[test]
    fn a_video_is_the_clip_then_one_free_box_to_the_end() {
        for len in [0, 100, CLIP.len(), min_video_len("sim-1"), 65_536] {
            let video = video_content("sim-1", len);
            assert_eq!(video.len(), len.max(min_video_len("sim-1")), "{len}");
            assert!(video.starts_with(CLIP));
            let rest = &video[CLIP.len()..];
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert_eq!(size, rest.len(), "{len}: the box runs to the end");
            assert_eq!(&rest[4..8], b"free");
            assert!(rest[8..].starts_with(placeholder_label("sim-1").as_bytes()));
        }
    }

    /// Checksums of videos made before the padding became a repeated
    /// block: small videos must not change.
    #[test]
    fn small_videos_are_the_same_bytes_as_before() {
        for (task_id, len, sha256) in [
            (
                "sim-1",
                0,
                "09146755f2e69e2d9b79cd94771a9ade8dc8e40ea57293241850759d4d84f085",
            ),
            (
                "sim-1",
                65_536,
                "a2eb69f8ca88989e80b81c049498abd1e985a7fc804240b2b1631b2718762739",
            ),
            (
                "clip",
                200_000,
                "764ed589dc9a3f11a18ad819c1e4e7dcb35a4bd850df875b455743403d5d6309",
            ),
            (
                "sim-2",
                1_000_000,
                "5617c16aa64e8c99d7bf497385e33395de9358014c4b638794dadc4ddf13b5d1",
            ),
        ] {
            assert_eq!(
                hex_sha256(&video_content(task_id, len)),
                sha256,
                "{task_id} {len}"
            );
        }
    }

    #[test]
    fn a_large_video_is_served_from_one_block_without_being_built() {
        let video = Video::new("sim-1", 1 << 30);
        assert_eq!(video.len(), 1 << 30);
        let block = video.pattern.as_ptr_range();
        let mut served = 0;
        for (i, chunk) in video.chunks(0, u64::MAX).enumerate() {
            assert!(chunk.len() as u64 <= CHUNK_LEN);
            if i > 0 {
                assert!(block.contains(&chunk.as_ptr()), "chunk {i} is a copy");
            }
            served += chunk.len() as u64;
        }
        assert_eq!(served, 1 << 30);
        assert_eq!(video.pattern.len() as u64, PATTERN_LEN);
        let head = video.range_to_vec(0, 4096);
        assert!(head.starts_with(CLIP));
        let size = u32::from_be_bytes(head[CLIP.len()..CLIP.len() + 4].try_into().unwrap());
        assert_eq!(u64::from(size), (1 << 30) - CLIP.len() as u64);
        assert_eq!(&head[CLIP.len() + 4..CLIP.len() + 8], b"free");
    }

    #[test]
    fn any_range_is_the_same_bytes_as_the_whole() {
        let video = Video::new("sim-3", 3 * PATTERN_LEN + 12_345);
        let whole = video.to_vec();
        assert_eq!(whole.len() as u64, video.len());
        let cuts = [
            0,
            7,
            CLIP.len() as u64,
            5_000,
            PATTERN_LEN + 3,
            2 * PATTERN_LEN + 4_200,
        ];
        for start in cuts {
            for end in [start, start + 1, start + CHUNK_LEN + 9, video.len()] {
                let end = end.min(video.len());
                assert_eq!(
                    video.range_to_vec(start, end),
                    whole[start as usize..end as usize]
                );
            }
        }
    }

    #[test]
    fn the_clip_is_an_mp4_with_its_metadata_first() {
        assert_eq!(&CLIP[4..12], b"ftypisom");
        let ftyp_len = u32::from_be_bytes(CLIP[..4].try_into().unwrap()) as usize;
        assert_eq!(&CLIP[ftyp_len + 4..ftyp_len + 8], b"moov");
    }
}
