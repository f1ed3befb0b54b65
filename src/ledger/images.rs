//! Remote images checked before paying: the distinct image URLs of the
//! manifest being taken in (a temporary table, so a million rows do not
//! become a million strings in memory), and the lasting record of what
//! each URL held when it was last checked (`image_checks`).

use rusqlite::{OptionalExtension, params};

use super::error::Result;
use super::ingest::Ingest;
use super::store::Ledger;
use crate::image::RemoteImage;

/// One checked URL, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCheck {
    pub url: String,
    pub image: RemoteImage,
    /// Whether the image met the API's rules.
    pub passed: bool,
}

/// The manifest's distinct image URLs being gathered, in one transaction.
pub struct ImageUrls<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl ImageUrls<'_> {
    /// Adds `url` unless it is already there.
    pub fn add(&mut self, url: &str) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO temp.image_urls (url) VALUES (?1)")?
            .execute([url])?;
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        Ok(self.tx.commit()?)
    }
}

/// Which URLs need fetching: those never checked, those that did not pass
/// (a missing or wrong image may have been fixed since), and passes
/// checked before `?1`.
const TO_CHECK: &str = "FROM temp.image_urls AS u LEFT JOIN image_checks AS c ON c.url = u.url \
    WHERE (c.url IS NULL OR c.passed = 0 OR c.checked_at < ?1)";

impl Ledger {
    /// Starts gathering the manifest's distinct image URLs, forgetting any
    /// gathered before on this connection.
    pub fn begin_image_urls(&mut self) -> Result<ImageUrls<'_>> {
        self.conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS image_urls (url TEXT PRIMARY KEY); \
             DELETE FROM temp.image_urls;",
        )?;
        Ok(ImageUrls {
            tx: self.conn.transaction()?,
        })
    }

    /// How many distinct URLs were gathered, and how many of them need
    /// fetching (passes checked at or after `fresh_since_ms` do not).
    pub fn count_image_urls(&self, fresh_since_ms: i64) -> Result<(u64, u64)> {
        let total: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM temp.image_urls", [], |row| row.get(0))?;
        let to_check: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) {TO_CHECK}"),
            [fresh_since_ms],
            |row| row.get(0),
        )?;
        Ok((total as u64, to_check as u64))
    }

    /// The next `limit` URLs to fetch after the gathered one numbered
    /// `after`, with their numbers (for paging).
    pub fn image_urls_to_check(
        &self,
        after: i64,
        limit: usize,
        fresh_since_ms: i64,
    ) -> Result<Vec<(i64, String)>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT u.rowid, u.url {TO_CHECK} AND u.rowid > ?2 ORDER BY u.rowid LIMIT ?3"
        ))?;
        let rows = statement.query_map(params![fresh_since_ms, after, limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records what fetching each URL found, in one transaction.
    pub fn record_image_checks(&mut self, checks: &[ImageCheck], now_ms: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut statement = tx.prepare_cached(
                "INSERT OR REPLACE INTO image_checks \
                 (url, passed, rule, message, format, bytes, width, height, checked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for check in checks {
                let (rule, message, format, bytes, width, height) = match &check.image {
                    RemoteImage::Read {
                        format,
                        bytes,
                        width,
                        height,
                    } => (
                        None,
                        None,
                        Some(*format),
                        *bytes,
                        Some(*width),
                        Some(*height),
                    ),
                    RemoteImage::Unreadable { rule, message } => {
                        (Some(*rule), Some(message.as_str()), None, None, None, None)
                    }
                };
                statement.execute(params![
                    check.url,
                    check.passed,
                    rule,
                    message,
                    format,
                    bytes.map(|bytes| bytes.min(i64::MAX as u64) as i64),
                    width,
                    height,
                    now_ms
                ])?;
            }
        }
        Ok(tx.commit()?)
    }

    /// What the last check of `url` found, if it was checked.
    pub fn image_check(&self, url: &str) -> Result<Option<RemoteImage>> {
        stored_check(&self.conn, url)
    }
}

impl Ingest<'_> {
    /// What the last check of `url` found, if it was checked.
    pub fn image_check(&self, url: &str) -> Result<Option<RemoteImage>> {
        stored_check(&self.tx, url)
    }
}

fn stored_check(conn: &rusqlite::Connection, url: &str) -> Result<Option<RemoteImage>> {
    Ok(conn
        .prepare_cached(
            "SELECT rule, message, format, bytes, width, height FROM image_checks WHERE url = ?1",
        )?
        .query_row([url], |row| {
            let rule: Option<String> = row.get(0)?;
            let message: Option<String> = row.get(1)?;
            let bytes: Option<i64> = row.get(3)?;
            Ok(RemoteImage::from_stored(
                rule.map(|rule| (rule, message.unwrap_or_default())),
                row.get(2)?,
                bytes.map(|bytes| bytes.max(0) as u64),
                row.get::<_, Option<u32>>(4)?.unwrap_or(0),
                row.get::<_, Option<u32>>(5)?.unwrap_or(0),
            ))
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(width: u32) -> RemoteImage {
        RemoteImage::Read {
            format: "png",
            bytes: Some(1000),
            width,
            height: 400,
        }
    }

    #[test]
    fn passes_are_kept_and_everything_else_is_checked_again() {
        let mut ledger = Ledger::open_temporary().unwrap();
        let mut urls = ledger.begin_image_urls().unwrap();
        for url in [
            "https://x/a",
            "https://x/b",
            "https://x/a",
            "https://x/c",
            "https://x/d",
        ] {
            urls.add(url).unwrap();
        }
        urls.finish().unwrap();
        assert_eq!(ledger.count_image_urls(0).unwrap(), (4, 4));
        let missing = RemoteImage::Unreadable {
            rule: "image-unreachable",
            message: "HTTP 404".to_owned(),
        };
        let checks = [
            ("https://x/a", read(600), true),
            ("https://x/b", read(100), false),
            ("https://x/c", missing.clone(), false),
        ]
        .map(|(url, image, passed)| ImageCheck {
            url: url.to_owned(),
            image,
            passed,
        });
        ledger.record_image_checks(&checks, 1000).unwrap();
        assert_eq!(ledger.count_image_urls(0).unwrap(), (4, 3));
        let next: Vec<String> = ledger
            .image_urls_to_check(0, 10, 0)
            .unwrap()
            .into_iter()
            .map(|(_, url)| url)
            .collect();
        assert_eq!(next, ["https://x/b", "https://x/c", "https://x/d"]);
        let after_b = ledger.image_urls_to_check(0, 1, 0).unwrap()[0].0;
        assert_eq!(
            ledger.image_urls_to_check(after_b, 1, 0).unwrap()[0].1,
            "https://x/c"
        );
        // A pass checked before the freshness limit is fetched again.
        assert_eq!(ledger.count_image_urls(2000).unwrap(), (4, 4));
        assert_eq!(ledger.image_check("https://x/a").unwrap(), Some(read(600)));
        assert_eq!(ledger.image_check("https://x/c").unwrap(), Some(missing));
        assert_eq!(ledger.image_check("https://x/d").unwrap(), None);
        // Gathering again starts from nothing.
        ledger.begin_image_urls().unwrap().finish().unwrap();
        assert_eq!(ledger.count_image_urls(0).unwrap(), (0, 0));
    }
}
