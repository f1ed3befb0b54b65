//! Paths as seen from another folder, for links that keep working when the
//! results table and the videos are opened from where they are.

use std::path::{Component, Path, PathBuf};

/// `path` as seen from the folder `from`: `videos/a.mp4` from `.` is
/// `videos/a.mp4`, from `results/` it is `../videos/a.mp4`. Both may be
/// relative (to the current directory) or absolute; folders that exist are
/// resolved first (symbolic links, `..`), so the answer holds on disk. An
/// answer that cannot be relative (no current directory) is absolute.
pub fn relative_path(path: &Path, from: &Path) -> PathBuf {
    match (absolute(path), absolute(from)) {
        (Some(path), Some(from)) => difference(&path, &from),
        _ => path.to_owned(),
    }
}

/// `path` made absolute: resolved on disk when it exists, else by joining
/// it to the current directory and folding `.` and `..` away.
fn absolute(path: &Path) -> Option<PathBuf> {
    if let Ok(resolved) = path.canonicalize() {
        return Some(resolved);
    }
    let joined = std::path::absolute(path).ok()?;
    let mut folded = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                folded.pop();
            }
            other => folded.push(other),
        }
    }
    Some(folded)
}

/// The relative path from the absolute folder `from` to the absolute
/// `path`: up to their common ancestor, then down.
fn difference(path: &Path, from: &Path) -> PathBuf {
    let path: Vec<Component<'_>> = path.components().collect();
    let from: Vec<Component<'_>> = from.components().collect();
    let common = path.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for component in &path[common..] {
        relative.push(component);
    }
    relative
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_go_up_to_the_common_folder_then_down() {
        let cases = [
            ("/a/b/out", "/a/b/out", ""),
            ("/a/b/out", "/a/b", "out"),
            ("/a/b/out", "/a/c/results", "../../b/out"),
            ("/a/b", "/a/b/out/deeper", "../.."),
            ("/x", "/a", "../x"),
        ];
        for (path, from, expected) in cases {
            assert_eq!(
                difference(Path::new(path), Path::new(from)),
                PathBuf::from(expected),
                "{path} from {from}"
            );
        }
    }

    #[test]
    fn relative_and_absolute_paths_meet_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("jobs").join("x-out");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        assert_eq!(relative_path(&out, &out), PathBuf::new());
        assert_eq!(
            relative_path(&out, &elsewhere),
            PathBuf::from("../jobs/x-out")
        );
        // A folder that does not exist yet, spelled with `..`.
        let later = elsewhere.join("new").join("..").join("newer");
        assert_eq!(
            relative_path(&out, &later),
            PathBuf::from("../../jobs/x-out")
        );
        // The current directory is some absolute folder: `.` resolves to it.
        let here = std::env::current_dir().unwrap();
        assert_eq!(relative_path(Path::new("."), &here), PathBuf::new());
    }
}
