//! Quoting for the commands pixbatch suggests, so that they can be pasted
//! into a POSIX shell as they are (`My Shots - Sheet1.csv` is one word).

use std::path::Path;

/// `text` as one shell word: unchanged when it is plainly safe, otherwise
/// in single quotes (a single quote inside becomes `'\''`). A word that
/// starts with `-` or `=` is quoted too (zsh expands a leading `=`).
pub fn quote(text: &str) -> String {
    let plain = !text.starts_with(['-', '='])
        && !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The arguments that name a ledger's jobs in a suggested command: the
/// manifest, `--ledger` when the user named one, `--simulate` for the
/// simulated runs' ledger. A path starting with `-` gets `./` so it is not
/// read as an option.
pub fn target_args(manifest: Option<&Path>, ledger: Option<&Path>, simulated: bool) -> String {
    let target = ledger_args(manifest, ledger);
    if simulated {
        format!("{target} --simulate")
    } else {
        target
    }
}

fn ledger_args(manifest: Option<&Path>, ledger: Option<&Path>) -> String {
    let path = |path: &Path| {
        let text = path.display().to_string();
        quote(&if text.starts_with('-') {
            format!("./{text}")
        } else {
            text
        })
    };
    match (manifest, ledger) {
        (Some(manifest), None) => path(manifest),
        (Some(manifest), Some(ledger)) => format!("{} --ledger {}", path(manifest), path(ledger)),
        (None, Some(ledger)) => format!("MANIFEST --ledger {}", path(ledger)),
        (None, None) => "MANIFEST".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_and_others_are_quoted() {
        assert_eq!(quote("jobs/example.csv"), "jobs/example.csv");
        assert_eq!(quote("My Shots - Sheet1.csv"), "'My Shots - Sheet1.csv'");
        assert_eq!(quote("it's.csv"), r"'it'\''s.csv'");
        assert_eq!(quote("$HOME;rm -rf"), "'$HOME;rm -rf'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("naïve.csv"), "'naïve.csv'");
        assert_eq!(quote("=x.csv"), "'=x.csv'");
    }

    #[test]
    fn targets_name_the_manifest_and_the_ledger() {
        assert_eq!(
            target_args(Some(Path::new("a b.csv")), None, false),
            "'a b.csv'"
        );
        assert_eq!(
            target_args(Some(Path::new("x.csv")), None, true),
            "x.csv --simulate"
        );
        assert_eq!(
            target_args(Some(Path::new("-x.csv")), Some(Path::new("l.db")), false),
            "./-x.csv --ledger l.db"
        );
        assert_eq!(
            target_args(None, Some(Path::new("l.db")), false),
            "MANIFEST --ledger l.db"
        );
    }

    #[test]
    fn a_quoted_word_reads_back_as_itself_in_a_real_shell() {
        for word in [
            "My Shots - Sheet1 (1).csv",
            "it's",
            "a\"b",
            "$x`y`\\z",
            "tab\there",
        ] {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&output.stdout), word);
        }
    }
}
