//! The stand-in videos the simulator serves: deterministic bytes per task.

use crate::job::hex_sha256;

/// A deterministic stand-in video for a task: an MP4 `ftyp` box followed by
/// bytes derived from the task id.
pub fn video_content(task_id: &str, len: usize) -> Vec<u8> {
    let mut content = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    let seed = u64::from_str_radix(&hex_sha256(task_id.as_bytes())[..16], 16).unwrap_or(0);
    let mut rng = fastrand::Rng::with_seed(seed);
    while content.len() < len {
        content.push(rng.u8(..));
    }
    content.truncate(len.max(24));
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videos_are_deterministic_per_task() {
        assert_eq!(video_content("a", 1000), video_content("a", 1000));
        assert_ne!(video_content("a", 1000), video_content("b", 1000));
        assert_eq!(video_content("a", 1000).len(), 1000);
    }
}
