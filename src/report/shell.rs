//! Quoting for the commands pixbatch suggests, so that they can be pasted
//! into a POSIX shell as they are (`My Shots - Sheet1.csv` is one word).

/// `text` as one shell word: unchanged when it is plainly safe, otherwise
/// in single quotes (a single quote inside becomes `'\''`).
pub fn quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
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
