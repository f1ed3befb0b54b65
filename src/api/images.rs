//! Reads the first bytes of remote images, to check them before paying for
//! them: one bounded request per image, through a client of its own that
//! never carries the API key (image hosts are not the API).

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

use super::client::root_cause;
use crate::image::{HeaderRead, RemoteImage, read_header};

/// The most of an image read to find its dimensions. A JPEG's frame header
/// follows its metadata segments (EXIF, ICC profile, XMP), each up to
/// 64 KiB, so 64 KiB is not always enough; 512 KiB covers every camera
/// and editor file seen in practice, and the read stops as soon as the
/// dimensions are known.
pub const IMAGE_HEAD_LIMIT: usize = 512 * 1024;

/// Redirects followed per image, at most.
const MAX_REDIRECTS: usize = 5;

/// Reads remote images' headers.
#[derive(Debug, Clone)]
pub struct ImageFetcher {
    http: reqwest::Client,
    timeout: Duration,
    /// An image longer than this is too long; when the server does not say
    /// its length, the body is counted up to here (and no further).
    max_bytes: u64,
}

impl ImageFetcher {
    /// A fetcher whose requests each take at most `timeout`, connecting
    /// included.
    pub fn new(connect_timeout: Duration, timeout: Duration, max_bytes: u64) -> ImageFetcher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("pixbatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is valid");
        ImageFetcher {
            http,
            timeout,
            max_bytes,
        }
    }

    /// Reads the image at `url` as far as its dimensions (and its length,
    /// from the headers or, when the server does not say, by counting).
    pub async fn check(&self, url: &str) -> RemoteImage {
        let request = self
            .http
            .get(url)
            .header(RANGE, format!("bytes=0-{}", IMAGE_HEAD_LIMIT - 1))
            .timeout(self.timeout);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return unreachable(&error, self.timeout),
        };
        let status = response.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return refused("the server says the image is empty (HTTP 416)".to_owned());
        }
        if !status.is_success() {
            return RemoteImage::Unreadable {
                rule: "image-unreachable",
                message: format!("the image could not be fetched: HTTP {status}"),
            };
        }
        // A server that ignores the range answers 200 with the whole body;
        // the reading below stops as early either way.
        let length = if status == StatusCode::PARTIAL_CONTENT {
            response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|value| value.to_str().ok())
                .and_then(range_total)
        } else {
            response.content_length()
        };
        let whole_body = status != StatusCode::PARTIAL_CONTENT;
        let body = response.bytes_stream();
        self.read_body(body, length, whole_body)
            .await
            .unwrap_or_else(|unreadable| unreadable)
    }

    /// Reads `body` until the image's dimensions are known; then, when the
    /// `length` is not known and the `whole_body` is coming, counts the
    /// rest (keeping none of it) up to just past the limit, within the
    /// request's time: a body that errs or times out while being counted
    /// has an unknown length, not an unreachable image.
    async fn read_body<Chunk: AsRef<[u8]>>(
        &self,
        mut body: impl futures::Stream<Item = reqwest::Result<Chunk>> + Unpin,
        length: Option<u64>,
        whole_body: bool,
    ) -> Result<RemoteImage, RemoteImage> {
        let mut head: Vec<u8> = Vec::new();
        let mut n_read: u64 = 0;
        let (format, width, height) = loop {
            match read_header(&head) {
                HeaderRead::Complete {
                    format,
                    width,
                    height,
                } => break (format, width, height),
                HeaderRead::Refused(message) => return Err(refused(message)),
                HeaderRead::NeedMore if head.len() >= IMAGE_HEAD_LIMIT => {
                    let limit = IMAGE_HEAD_LIMIT / 1024;
                    return Err(refused(format!("no dimensions in its first {limit} KiB")));
                }
                HeaderRead::NeedMore => {}
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    let chunk = chunk.as_ref();
                    n_read += chunk.len() as u64;
                    let room = IMAGE_HEAD_LIMIT - head.len();
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Some(Err(error)) => return Err(unreachable(&error, self.timeout)),
                None if head.is_empty() => return Err(refused("the image is empty".to_owned())),
                None => return Err(refused("the image ends before its dimensions".to_owned())),
            }
        };
        let bytes = match length {
            Some(length) => Some(length),
            None if whole_body => loop {
                if n_read > self.max_bytes {
                    break Some(n_read);
                }
                match body.next().await {
                    Some(Ok(chunk)) => n_read += chunk.as_ref().len() as u64,
                    // The image was read; only its length is not known (a
                    // slow transform that ran out of time, say): the
                    // provider will judge it.
                    Some(Err(_)) => break None,
                    None => break Some(n_read),
                }
            },
            // A part without the total: the length is not known.
            None => None,
        };
        Ok(RemoteImage::Read {
            format,
            bytes,
            width,
            height,
        })
    }
}

fn refused(message: String) -> RemoteImage {
    RemoteImage::Unreadable {
        rule: "image-format",
        message: format!("the image is not a readable PNG or JPEG: {message}"),
    }
}

/// A request that got no answer. The URL is left out of the message: the
/// problem is shown at the row, and signed URLs carry secrets.
fn unreachable(error: &reqwest::Error, timeout: Duration) -> RemoteImage {
    let cause = if error.is_timeout() {
        format!("no answer within {}", humantime::format_duration(timeout))
    } else if error.is_redirect() {
        format!("more than {MAX_REDIRECTS} redirects")
    } else {
        root_cause(error)
    };
    RemoteImage::Unreadable {
        rule: "image-unreachable",
        message: format!("the image could not be fetched: {cause}"),
    }
}

/// The total length in a `Content-Range: bytes 0-65535/1234567` header
/// (`*` when the server does not know it).
fn range_total(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_length_comes_from_the_content_range() {
        assert_eq!(range_total("bytes 0-65535/1234567"), Some(1_234_567));
        assert_eq!(range_total("bytes 0-9/10"), Some(10));
        assert_eq!(range_total("bytes 0-65535/*"), None);
        assert_eq!(range_total("nonsense"), None);
    }
}
