//! The stand-in videos the simulator serves: a real one-second clip that
//! plays in a browser, made unique per task and padded to the length asked.

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

/// A deterministic stand-in video for a task: `CLIP` followed by a `free`
/// box (which players skip) holding the task id and bytes derived from it,
/// so every task's video has its own checksum. The box fills the video to
/// `len` bytes; a shorter `len` gives the shortest such video, the clip and
/// a box holding the id (about 4.1 KB).
pub fn video_content(task_id: &str, len: usize) -> Vec<u8> {
    let label = placeholder_label(task_id);
    let box_len = len.saturating_sub(CLIP.len()).max(8 + label.len());
    let mut content = Vec::with_capacity(CLIP.len() + box_len + 8);
    content.extend_from_slice(CLIP);
    match u32::try_from(box_len) {
        Ok(size) => {
            content.extend_from_slice(&size.to_be_bytes());
            content.extend_from_slice(b"free");
        }
        // A box over 4 GiB gives its size in a 64-bit field after the type.
        Err(_) => {
            content.extend_from_slice(&1u32.to_be_bytes());
            content.extend_from_slice(b"free");
            content.extend_from_slice(&(box_len as u64 + 8).to_be_bytes());
        }
    }
    content.extend_from_slice(label.as_bytes());
    let seed = u64::from_str_radix(&hex_sha256(task_id.as_bytes())[..16], 16).unwrap_or(0);
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = content.len() + box_len.saturating_sub(8 + label.len());
    content.resize_with(end, || rng.u8(..));
    content
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

    #[test]
    fn the_clip_is_an_mp4_with_its_metadata_first() {
        assert_eq!(&CLIP[4..12], b"ftypisom");
        let ftyp_len = u32::from_be_bytes(CLIP[..4].try_into().unwrap()) as usize;
        assert_eq!(&CLIP[ftyp_len + 4..ftyp_len + 8], b"moov");
    }
}
