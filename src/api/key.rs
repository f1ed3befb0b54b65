//! The API key: kept in a type whose `Debug` never shows it, sent only as a
//! sensitive header, and redacted from anything a server echoes back.

use std::fmt;

use reqwest::header::HeaderValue;

/// The API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    /// `text` with every occurrence of the key replaced by `***`, in case a
    /// server or proxy echoes it back in an error body.
    pub(super) fn redact(&self, text: String) -> String {
        if self.0.is_empty() || !text.contains(&self.0) {
            return text;
        }
        text.replace(&self.0, "***")
    }

    pub(super) fn header(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_never_keep_the_key() {
        let key = ApiKey::new("sk-abc".into());
        assert_eq!(key.redact("bad key sk-abc!".into()), "bad key ***!");
        assert_eq!(key.redact("nothing here".into()), "nothing here");
    }
}
