//! The gallery: `index.html`, one card per manifest row (the input image,
//! the video, the prompt, what became of the job), self-contained and safe
//! against any manifest content. Written from the ledger, streamed.
//!
//! Safety comes twice: every value is escaped ([`Escaped`]), and the page's
//! Content-Security-Policy runs only its own script and style (by hash), so
//! markup that slipped through could neither run nor load anything remote
//! but images. Speed with 10,000 rows: cards off screen are not laid out
//! (`content-visibility`), and each card's `<img loading="lazy">` and
//! `<video controls preload="metadata">` wait in an inert `<template>` until
//! the card comes near the viewport (10,000 live media elements take
//! Chromium seconds to build), and go back into it when the card leaves
//! (Chromium makes no more than about 1,000 video players);
//! `index.html#all` shows every one at once (for tests and screenshots of
//! galleries under 1,000 videos). Without JavaScript the cards show their
//! text and a link to each video.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::Error;
use crate::export::{INVALID_STATE, job_error, write_atomically};
use crate::job::JobState;
use crate::ledger::{JobRecord, KeyCells, Ledger, ResultRow};
use crate::price::Usd;

/// The gallery's file name in the output folder.
pub const GALLERY_FILE: &str = "index.html";

/// What one card shows. Built from a job ([`Card::from_job`]) or from a
/// row that was not taken in ([`Card::invalid`]); every text is raw here
/// and escaped when written, and borrowed from the row where it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card<'a> {
    /// The job id; for a row not taken in, its id cell or `line N`.
    pub id: Cow<'a, str>,
    /// The row's line in the manifest.
    pub line: i64,
    /// A job state's name, or [`INVALID_STATE`].
    pub state: &'static str,
    pub prompt: Option<Cow<'a, str>>,
    /// The input image: a local file's path relative to the page, or an
    /// http(s) URL.
    pub image: Option<Cow<'a, str>>,
    /// The downloaded video's path relative to the page, URL-encoded.
    pub video: Option<String>,
    pub cost: Option<Usd>,
    /// Why the job failed (or why the row was not taken in).
    pub reason: Option<Cow<'a, str>>,
}

/// Where the page is and where what it links to lies, as absolute paths,
/// so links can be made relative to the page.
#[derive(Debug, Clone)]
pub struct Places {
    page_dir: PathBuf,
    /// The output folder as seen from the page, worked out once.
    videos: PathBuf,
    /// `videos` as a link, so that a video's link is this and its name.
    videos_href: String,
    manifest_dir: Option<PathBuf>,
    /// `http://localhost/`: local paths are encoded as URL paths under it
    /// to compare them with what was sent.
    localhost: Url,
}

impl Places {
    /// `page` is the HTML file; `manifest_dir`, when known, is where local
    /// image paths in the manifest start.
    pub fn new(page: &Path, out_dir: &Path, manifest_dir: Option<&Path>) -> io::Result<Places> {
        let page = std::path::absolute(page)?;
        let page_dir = page.parent().map_or_else(|| page.clone(), Path::to_owned);
        let videos = crate::export::relative_path(&std::path::absolute(out_dir)?, &page_dir);
        Ok(Places {
            videos_href: encode_href(&videos),
            videos,
            page_dir,
            manifest_dir: manifest_dir
                .map(|dir| match dir.as_os_str().is_empty() {
                    true => std::path::absolute("."),
                    false => std::path::absolute(dir),
                })
                .transpose()?,
            localhost: Url::parse("http://localhost/").map_err(io::Error::other)?,
        })
    }

    /// `target` as a link from the page: relative, each part URL-encoded.
    fn href(&self, target: &Path) -> String {
        relative_href(&self.page_dir, target)
    }

    /// The link to the video `name` in the output folder.
    fn video_href(&self, name: &str) -> String {
        if name.is_empty() || name == "." || name.contains('/') {
            return encode_href(&self.videos.join(name));
        }
        // A plain name is the last part of `videos.join(name)`.
        match self.videos_href.as_str() {
            "" => encode_path_part(name),
            folder => format!("{folder}/{}", encode_path_part(name)),
        }
    }

    /// The image to show for a job sent with the URL `sent`: the local
    /// file, when a cell of the row names one that `--image-base-url`
    /// turned into `sent`, else `sent` itself.
    fn image_src<'a>(&self, input: &Map<String, Value>, sent: &'a str) -> Option<Cow<'a, str>> {
        match self.local_image(input, sent) {
            Some(path) => Some(Cow::Owned(self.href(&path))),
            None => web_url(sent).map(Cow::Borrowed),
        }
    }

    /// The image an invalid row's image cell, written `text`, names: the
    /// local file, when the cell is a path to one under the manifest's
    /// folder, else what [`Places::image_src`] makes of it as a URL.
    fn written_image<'a>(&self, input: &Map<String, Value>, text: &'a str) -> Option<Cow<'a, str>> {
        let local = self
            .manifest_dir
            .as_ref()
            .zip(local_path_parts(text))
            .map(|(dir, parts)| parts.iter().fold(dir.clone(), |path, part| path.join(part)))
            .filter(|path| path.is_file());
        match local {
            Some(path) => Some(Cow::Owned(self.href(&path))),
            None => self.image_src(input, text),
        }
    }

    /// The local file a cell of `input` names that was sent as `sent`.
    /// `sent` is parsed only when a cell may name it (`may_name`): a
    /// million rows of web images are shown without parsing a URL.
    fn local_image(&self, input: &Map<String, Value>, sent: &str) -> Option<PathBuf> {
        let dir = self.manifest_dir.as_ref()?;
        let mut sent_url: Option<Option<Url>> = None;
        let look = Sent::new(sent);
        input.values().filter_map(Value::as_str).find_map(|text| {
            if !look.may_name(text) {
                return None;
            }
            let parts = local_path_parts(text)?;
            let sent = sent_url
                .get_or_insert_with(|| Url::parse(sent).ok())
                .as_ref()?;
            // The same encoding validation used to append the path to the
            // base URL, so a match is exact.
            let mut expected = self.localhost.clone();
            expected.path_segments_mut().ok()?.extend(&parts);
            if !sent.path().ends_with(expected.path()) {
                return None;
            }
            let path = parts.iter().fold(dir.clone(), |path, part| path.join(part));
            path.is_file().then_some(path)
        })
    }
}

/// A URL sent, looked at once for [`Sent::may_name`].
struct Sent<'s> {
    text: &'s str,
    /// Where a part of it may end: the few separators, and its end.
    ends: Vec<usize>,
    /// Whether it has characters the URL parser drops.
    drops: bool,
}

/// Characters the URL parser drops wherever they are.
const DROPPED: [char; 3] = ['\t', '\n', '\r'];

impl<'s> Sent<'s> {
    fn new(text: &'s str) -> Sent<'s> {
        let bytes = text.as_bytes();
        let ends = (0..bytes.len())
            .filter(|&at| matches!(bytes[at], b'/' | b'\\' | b'?' | b'#') || bytes[at] <= b' ')
            .chain([bytes.len()])
            .collect();
        Sent {
            text,
            ends,
            drops: text.contains(DROPPED),
        }
    }

    /// Whether the cell `text` may be a local path that was sent as this
    /// URL (see `Places::local_image`). A quick look that never says no
    /// to a cell that was: the end of the cell's last part, in characters
    /// a URL path keeps as they are, must end a part of the URL (and start
    /// one, when it is the whole part); and the cell that is the URL
    /// itself is no local path (when it does not parse, neither does the
    /// URL).
    fn may_name(&self, text: &str) -> bool {
        let text = text.trim();
        if text == self.text && has_scheme(text) {
            return false;
        }
        let Some(last) = last_part(text) else {
            return false;
        };
        // Percent signs, and characters the URL parser drops, are left to it.
        if self.drops || last.contains('%') || last.contains(DROPPED) {
            return true;
        }
        let kept =
            |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        let start = last
            .bytes()
            .rposition(|byte| !kept(byte))
            .map_or(0, |at| at + 1);
        let tail = &last.as_bytes()[start..];
        let Some(&tail_end) = tail.last() else {
            return true;
        };
        let bytes = self.text.as_bytes();
        self.ends.iter().any(|&end| {
            let before = &bytes[..end];
            before.last() == Some(&tail_end)
                && before.ends_with(tail)
                && (start > 0
                    || matches!(
                        before[..before.len() - tail.len()].last(),
                        Some(b'/' | b'\\')
                    ))
        })
    }
}

/// The last part of a path as `local_path_parts` splits it (`None` when
/// it has none), found from the end.
fn last_part(text: &str) -> Option<&str> {
    let mut end = text.len();
    loop {
        let start = text.as_bytes()[..end]
            .iter()
            .rposition(|&byte| byte == b'/' || byte == b'\\')
            .map_or(0, |at| at + 1);
        let part = &text[start..end];
        if !part.is_empty() && part != "." {
            return Some(part);
        }
        end = start.checked_sub(1)?;
    }
}

/// Whether `text` starts with a URL scheme of two letters or more (`http:`;
/// one letter is a Windows drive), so that if it parses as a URL, it is one.
fn has_scheme(text: &str) -> bool {
    let bytes = text.as_bytes();
    let Some(colon) = bytes.iter().position(|&byte| byte == b':') else {
        return false;
    };
    colon >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1..colon]
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
}

/// The parts of a cell that reads as a relative local path (as validation
/// reads one), or `None` for a URL, an empty cell or a path leaving its
/// folder.
fn local_path_parts(text: &str) -> Option<Vec<&str>> {
    let text = text.trim();
    if is_url(text) || text.starts_with(['/', '\\']) {
        return None;
    }
    let parts: Vec<&str> = text
        .split(['/', '\\'])
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    (!parts.is_empty() && !parts.contains(&"..")).then_some(parts)
}

/// Whether `text` is a URL (a scheme of one letter is a Windows drive).
/// Only text that starts with a scheme is parsed to find out.
fn is_url(text: &str) -> bool {
    // Tabs and newlines, and control characters in front, the parser
    // drops: such text is parsed whatever it starts with.
    let plain =
        !text.contains(['\t', '\n', '\r']) && !text.starts_with(|c: char| c.is_ascii_control());
    if plain && !has_scheme(text) {
        return false;
    }
    Url::parse(text).is_ok_and(|url| url.scheme().len() > 1)
}

/// `url` if it is an http(s) URL (nothing else may reach an `src`).
fn web_url(url: &str) -> Option<&str> {
    let start = url.trim_start().as_bytes();
    let is = |scheme: &[u8]| {
        start
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    };
    (is(b"http://") || is(b"https://")).then(|| url.trim())
}

/// `target` relative to the folder `from` (both absolute), as a URL path:
/// each part percent-encoded, joined with `/`.
pub fn relative_href(from: &Path, target: &Path) -> String {
    encode_href(&crate::export::relative_path(target, from))
}

/// A relative path as a URL path: each part percent-encoded, joined with
/// `/`.
fn encode_href(path: &Path) -> String {
    path.components()
        .map(|part| encode_path_part(&part.as_os_str().to_string_lossy()))
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes all but the unreserved characters of RFC 3986, so a
/// file name with `#`, `?`, `%` or spaces still links to itself.
fn encode_path_part(part: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push('%');
            encoded.push(HEX[usize::from(byte >> 4)] as char);
            encoded.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
    encoded
}

impl<'a> Card<'a> {
    /// The card of a manifest row.
    pub fn of_row(row: &'a ResultRow, places: &Places) -> Card<'a> {
        match row {
            ResultRow::Job(job) => Card::from_job(job, places),
            ResultRow::Invalid {
                line,
                input,
                cells,
                problems,
            } => Card::invalid(
                i64::try_from(*line).unwrap_or(i64::MAX),
                input,
                cells,
                problems,
                places,
            ),
        }
    }

    pub fn from_job(job: &'a JobRecord, places: &Places) -> Card<'a> {
        let video = match (job.state, &job.file_name) {
            (JobState::Downloaded, Some(name)) => Some(places.video_href(name)),
            _ => None,
        };
        let (prompt, image) = match &job.request {
            Some(request) => (
                Some(Cow::Borrowed(request.prompt.as_str())),
                places.image_src(job.input(), &request.image),
            ),
            None => (input_text(job.input(), "prompt").map(Cow::Owned), None),
        };
        Card {
            id: Cow::Borrowed(&job.job_id.0),
            line: job.manifest_line,
            state: job.state.as_str(),
            prompt,
            image,
            video,
            cost: Some(Usd::from_micros(job.charged_micros)),
            reason: job_error(job).map(Cow::Owned),
        }
    }

    /// A row that was not taken in: its id, prompt and image as validation
    /// found them (the id `line N` when it has none), and its problems.
    pub fn invalid(
        line: i64,
        input: &Map<String, Value>,
        cells: &'a KeyCells,
        problems: &'a str,
        places: &Places,
    ) -> Card<'a> {
        Card {
            id: cells
                .id
                .as_deref()
                .map_or_else(|| Cow::Owned(format!("line {line}")), Cow::Borrowed),
            line,
            state: INVALID_STATE,
            prompt: cells.prompt.as_deref().map(Cow::Borrowed),
            image: cells
                .image
                .as_deref()
                .and_then(|text| places.written_image(input, text)),
            video: None,
            cost: None,
            reason: Some(Cow::Borrowed(problems)),
        }
    }
}

/// The text of the input cell named `name` (any case, spaces around).
fn input_text(input: &Map<String, Value>, name: &str) -> Option<String> {
    input
        .iter()
        .find(|(column, _)| column.trim().eq_ignore_ascii_case(name))
        .and_then(|(_, value)| match value {
            Value::String(text) => Some(text.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
}

/// Text made safe for HTML, in element content and in quoted attributes.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(self.0, |piece| f.write_str(piece))
    }
}

/// Hands `text` to `emit` in pieces, each character HTML gives a meaning
/// to (`&<>"'`) replaced by its entity: one pass over the bytes.
fn escape<E>(text: &str, mut emit: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    let mut done = 0;
    for (at, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        emit(&text[done..at])?;
        emit(entity)?;
        done = at + 1;
    }
    emit(&text[done..])
}

/// Appends `text`, escaped, to the card being written.
fn push_escaped(card: &mut Vec<u8>, text: &str) {
    escape(text, |piece| {
        card.extend_from_slice(piece.as_bytes());
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
}

/// The states a card can be in, in the filter's order.
fn card_states() -> impl Iterator<Item = &'static str> {
    JobState::ALL
        .into_iter()
        .map(JobState::as_str)
        .chain([INVALID_STATE])
}

/// The page's script. Each card's image and video wait in a `<template>`
/// (inert: nothing loads, no player is made) until the card comes near the
/// viewport, and go back into it when the card leaves (Chromium makes at
/// most about 1,000 video players, so a long scroll must let go of them);
/// `#all` shows every card at once and keeps them. A video is marked
/// `data-loaded="yes"` once it has a picture and a duration, or `"error"`
/// (a missing or unplayable file shows a badge; a video let go of is not
/// an error).
const SCRIPT: &str = r##"
"use strict";
(function () {
  var all = false;
  var observer = null;
  var templates = new WeakMap();
  function mark(video) {
    video.addEventListener("loadedmetadata", function () {
      video.dataset.loaded = video.videoWidth > 0 && video.duration > 0 ? "yes" : "error";
    }, { once: true });
    video.addEventListener("error", function () {
      if (video.isConnected && video.hasAttribute("src")) video.dataset.loaded = "error";
    }, { once: true });
  }
  function show(slot) {
    var template = slot.querySelector("template");
    if (!template) return;
    templates.set(slot, template);
    var content = document.importNode(template.content, true);
    content.querySelectorAll("video").forEach(mark);
    if (all) content.querySelectorAll("img").forEach(function (img) { img.loading = "eager"; });
    slot.replaceChildren(content);
  }
  function hide(slot) {
    var template = templates.get(slot);
    if (!template || template.parentNode === slot) return;
    slot.querySelectorAll("video").forEach(function (video) {
      video.removeAttribute("src");
      video.load();
    });
    slot.replaceChildren(template);
  }
  var slots = Array.prototype.slice.call(document.querySelectorAll(".slot"));
  function showAll() {
    all = true;
    if (observer) observer.disconnect();
    slots.forEach(show);
  }
  window.addEventListener("hashchange", function () { if (location.hash === "#all") showAll(); });
  if (location.hash === "#all" || !("IntersectionObserver" in window)) { showAll(); return; }
  observer = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) show(entry.target); else hide(entry.target);
    });
  }, { rootMargin: "800px 0px" });
  slots.forEach(function (slot) { observer.observe(slot); });
})();
"##;

const BASE_STYLE: &str = "
:root { color-scheme: light dark; font: 14px/1.4 system-ui, sans-serif; }
body { margin: 0; display: flex; flex-direction: column; }
.f { position: absolute; opacity: 0; pointer-events: none; }
nav { order: -1; position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: .4em;
  align-items: center; padding: .6em 1em; background: Canvas; border-bottom: 1px solid #8886; }
nav h1 { font-size: 1.1em; margin: 0 1em 0 0; }
nav label { padding: .15em .7em; border: 1px solid #8886; border-radius: 1em; cursor: pointer; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 1em; padding: 1em; }
.card { content-visibility: auto; contain-intrinsic-size: auto 420px; border: 1px solid #8886;
  border-radius: 8px; padding: .6em; overflow-wrap: anywhere; }
.media { display: grid; grid-template-columns: 1fr 1fr; gap: .4em; }
.media img, .media video, .none, .slot { width: 100%; aspect-ratio: 1; object-fit: contain; background: #8882; }
.none { display: grid; place-items: center; color: #888; }
.broken { display: none; color: #d22; font-weight: bold; margin: .3em 0 0; }
.card:has(video[data-loaded=error]) .broken { display: block; }
.prompt { white-space: pre-wrap; max-height: 9em; overflow: auto; margin: .5em 0; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .6em; margin: .3em 0; }
dt { color: #888; } dd { margin: 0; }
.reason { color: #d22; white-space: pre-wrap; margin: .3em 0; }
[data-state=downloaded] .state { color: #2a2; }
[data-state=failed] .state, [data-state=invalid] .state, [data-state=ambiguous] .state { color: #d22; }
.empty { color: #888; }
";

/// The style: the base, then for each state a rule that hides the other
/// cards when its filter is chosen, and one that marks the chosen filter.
fn style() -> String {
    let mut style = String::from(BASE_STYLE);
    style.push_str("#f-all:checked ~ nav label[for=f-all]");
    for state in card_states() {
        style.push_str(&format!(", #f-{state}:checked ~ nav label[for=f-{state}]"));
    }
    style.push_str(" { background: #8884; font-weight: bold; }\n");
    for state in card_states() {
        style.push_str(&format!(
            "#f-{state}:checked ~ main .card:not([data-state={state}]) {{ display: none; }}\n"
        ));
    }
    style
}

/// A CSP source for an inline script or style: its SHA-256, base64.
fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// A card's image and video.
fn card_media(html: &mut Vec<u8>, card: &Card) {
    html.extend_from_slice(b"<article class=\"card\" data-state=\"");
    push_escaped(html, card.state);
    html.extend_from_slice(b"\">\n<div class=\"media\">");
    match &card.image {
        Some(src) => {
            html.extend_from_slice(
                b"<div class=\"slot\"><template><img loading=\"lazy\" decoding=\"async\" \
                  alt=\"input image\" src=\"",
            );
            push_escaped(html, src);
            html.extend_from_slice(b"\"></template></div>");
        }
        None => html.extend_from_slice(b"<div class=\"none\">no image</div>"),
    }
    match &card.video {
        Some(href) => {
            html.extend_from_slice(
                b"<div class=\"slot\"><template><video controls preload=\"metadata\" playsinline \
                  src=\"",
            );
            push_escaped(html, href);
            html.extend_from_slice(
                b"\"></video></template></div></div>\n<p class=\"broken\">video file missing</p>\n",
            );
        }
        None => html.extend_from_slice(b"<div class=\"none\">no video</div></div>\n"),
    }
}

/// A card's prompt, details, reason and link; `cost` keeps the last cost
/// shown and its text.
fn card_text(html: &mut Vec<u8>, card: &Card, cost: &mut Option<(Usd, String)>) {
    if let Some(prompt) = &card.prompt {
        html.extend_from_slice(b"<p class=\"prompt\">");
        push_escaped(html, prompt);
        html.extend_from_slice(b"</p>\n");
    }
    html.extend_from_slice(b"<dl><dt>id</dt><dd>");
    push_escaped(html, &card.id);
    html.extend_from_slice(b"</dd><dt>line</dt><dd>");
    // Writing to a Vec cannot fail.
    let _ = write!(html, "{}", card.line);
    html.extend_from_slice(b"</dd><dt>state</dt><dd class=\"state\">");
    push_escaped(html, card.state);
    html.extend_from_slice(b"</dd>");
    if let Some(usd) = card.cost {
        if cost.as_ref().is_none_or(|(last, _)| *last != usd) {
            *cost = Some((usd, usd.to_string()));
        }
        let shown = cost.as_ref().map_or("", |(_, text)| text.as_str());
        html.extend_from_slice(b"<dt>cost</dt><dd>");
        html.extend_from_slice(shown.as_bytes());
        html.extend_from_slice(b"</dd>");
    }
    html.extend_from_slice(b"</dl>\n");
    if let Some(reason) = &card.reason {
        html.extend_from_slice(b"<p class=\"reason\">");
        push_escaped(html, reason);
        html.extend_from_slice(b"</p>\n");
    }
    if let Some(href) = &card.video {
        html.extend_from_slice(b"<a href=\"");
        push_escaped(html, href);
        html.extend_from_slice(b"\">open the video</a>\n");
    }
    html.extend_from_slice(b"</article>\n");
}

/// Writes the page one card at a time: the head and the filter's inputs
/// first, the cards, then the filter's labels with the counts (shown at
/// the top by the style), so nothing is held but the counts.
pub struct GalleryWriter<W: Write> {
    out: W,
    title: String,
    counts: Vec<(&'static str, u64)>,
    n_cards: u64,
    /// The card being written, whole, before it goes to `out`: one write
    /// a card, into a buffer reused from card to card.
    card: Vec<u8>,
    /// The last cost shown, as shown: most cards cost the same.
    cost: Option<(Usd, String)>,
}

impl<W: Write> GalleryWriter<W> {
    pub fn begin(mut out: W, title: &str) -> io::Result<GalleryWriter<W>> {
        let style = style();
        let policy = format!(
            "default-src 'none'; img-src 'self' file: data: http: https:; media-src 'self' file:; \
             style-src {}; script-src {}; base-uri 'none'; form-action 'none'",
            csp_hash(&style),
            csp_hash(SCRIPT)
        );
        let title = Escaped(if title.is_empty() { "pixbatch" } else { title });
        write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n\
             <meta name=\"referrer\" content=\"no-referrer\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{style}</style>\n</head>\n<body>\n\
             <input type=\"radio\" class=\"f\" name=\"filter\" id=\"f-all\" checked>\n"
        )?;
        for state in card_states() {
            writeln!(
                out,
                "<input type=\"radio\" class=\"f\" name=\"filter\" id=\"f-{state}\">"
            )?;
        }
        out.write_all(b"<main>\n")?;
        Ok(GalleryWriter {
            out,
            title: title.0.to_owned(),
            counts: card_states().map(|state| (state, 0)).collect(),
            n_cards: 0,
            card: Vec::new(),
            cost: None,
        })
    }

    pub fn card(&mut self, card: &Card) -> io::Result<()> {
        if let Some((_, n)) = self
            .counts
            .iter_mut()
            .find(|(state, _)| *state == card.state)
        {
            *n += 1;
        }
        self.n_cards += 1;
        let html = &mut self.card;
        html.clear();
        card_media(html, card);
        card_text(html, card, &mut self.cost);
        self.out.write_all(html)
    }
    /// Writes the filter with the counts and the script; returns the
    /// number of cards and the writer.
    pub fn finish(mut self) -> io::Result<(u64, W)> {
        let out = &mut self.out;
        if self.n_cards == 0 {
            out.write_all(b"<p class=\"empty\">no rows</p>\n")?;
        }
        write!(
            out,
            "</main>\n<nav aria-label=\"filter by state\"><h1>{}</h1>\
             <label for=\"f-all\">all {}</label>",
            Escaped(&self.title),
            self.n_cards
        )?;
        for (state, n) in self.counts.iter().filter(|(_, n)| *n > 0) {
            write!(out, "<label for=\"f-{state}\">{state} {n}</label>")?;
        }
        write!(out, "</nav>\n<script>{SCRIPT}</script>\n</body>\n</html>\n")?;
        out.flush()?;
        Ok((self.n_cards, self.out))
    }
}

/// Writes the gallery of the current manifest's rows to `out`, in manifest
/// order. Returns the number of cards.
pub fn write_gallery(
    ledger: &Ledger,
    places: &Places,
    title: &str,
    out: impl Write,
) -> Result<u64, Error> {
    let mut n_cards = 0;
    let written = GalleryWriter::begin(out, title).and_then(|mut gallery| {
        ledger
            .for_each_result_row(|row| {
                n_cards += 1;
                gallery.card(&Card::of_row(&row, places))
            })
            .map_err(|error| io::Error::other(error.to_string()))??;
        gallery.finish()
    });
    match written {
        Ok(_) => Ok(n_cards),
        // A closed pipe (`pixbatch export --format html -o - | head`) is not an error.
        Err(error) if crate::report::is_broken_pipe(&error) => Ok(n_cards),
        Err(error) => Err(gallery_error(error)),
    }
}

/// A failure to write the gallery, as said to the user.
pub fn gallery_error(error: io::Error) -> Error {
    Error::Other(format!("failed to write the gallery: {error}"))
}

/// Writes the gallery to `page` atomically; links are relative to its
/// folder. Returns the number of cards.
pub fn write_gallery_file(
    ledger: &Ledger,
    out_dir: &Path,
    manifest_dir: Option<&Path>,
    title: &str,
    page: &Path,
) -> Result<u64, Error> {
    let places =
        Places::new(page, out_dir, manifest_dir).map_err(Error::io("find the folder of", page))?;
    write_atomically(page, ".index.", |writer| {
        write_gallery(ledger, &places, title, writer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let hostile = r#"<script>alert(1)</script> "><img src=x onerror='alert(1)'> & done"#;
        let escaped = Escaped(hostile).to_string();
        assert_eq!(
            escaped,
            "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=&#39;alert(1)&#39;&gt; &amp; done"
        );
        assert!(!escaped.contains(['<', '>', '"', '\'']));
        assert_eq!(Escaped("Café ✓").to_string(), "Café ✓");
    }

    #[test]
    fn links_are_relative_to_the_page_and_encoded() {
        let href = |from: &str, to: &str| relative_href(Path::new(from), Path::new(to));
        assert_eq!(href("/w/out", "/w/out/a.mp4"), "a.mp4");
        assert_eq!(href("/w/out", "/w/images/a b.png"), "../images/a%20b.png");
        assert_eq!(href("/w/site/g", "/w/out/x.mp4"), "../../out/x.mp4");
        assert_eq!(href("/w/out", "/w/out/50%#?.mp4"), "50%25%23%3F.mp4");
        assert_eq!(href("/w/out", "/w/out/café.mp4"), "caf%C3%A9.mp4");
    }

    #[test]
    fn only_relative_paths_inside_the_folder_are_local_images() {
        assert_eq!(local_path_parts("img/a.png"), Some(vec!["img", "a.png"]));
        assert_eq!(
            local_path_parts(" .\\img\\a.png "),
            Some(vec!["img", "a.png"])
        );
        assert_eq!(local_path_parts("https://x.test/a.png"), None);
        assert_eq!(local_path_parts("../a.png"), None);
        assert_eq!(local_path_parts("/etc/a.png"), None);
        assert_eq!(local_path_parts(""), None);
    }

    #[test]
    fn a_local_image_sent_under_the_base_url_is_shown_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        std::fs::write(dir.path().join("img/a b.png"), b"png").unwrap();
        let out = dir.path().join("out");
        let places = Places::new(&out.join("index.html"), &out, Some(dir.path())).unwrap();
        let input: Map<String, Value> =
            serde_json::from_str(r#"{"notes": "x", "Image": "img/a b.png"}"#).unwrap();
        let sent = "https://cdn.test/base/img/a%20b.png";
        assert_eq!(
            places.image_src(&input, sent).as_deref(),
            Some("../img/a%20b.png")
        );
        // Sent from elsewhere, or a file that is not there: the URL.
        let other = "https://cdn.test/base/img/other.png";
        assert_eq!(places.image_src(&input, other).as_deref(), Some(other));
        std::fs::remove_file(dir.path().join("img/a b.png")).unwrap();
        assert_eq!(places.image_src(&input, sent).as_deref(), Some(sent));
        assert_eq!(web_url("javascript:alert(1)"), None);
    }

    /// The exact test `local_image` makes of a cell that `may_name` lets
    /// through (the file's existence aside).
    fn names(text: &str, sent: &str) -> bool {
        let Some(parts) = local_path_parts(text) else {
            return false;
        };
        let Ok(sent) = Url::parse(sent) else {
            return false;
        };
        let mut expected = Url::parse("http://localhost/").unwrap();
        expected.path_segments_mut().unwrap().extend(&parts);
        sent.path().ends_with(expected.path())
    }

    #[test]
    fn the_quick_look_turns_away_the_cells_of_a_web_image_row() {
        let sent = "https://cdn.example.com/stills/15.png";
        for cell in [
            sent,
            "row-15",
            "Shot 15: a slow pan, golden light",
            "5",
            "720p",
            "batch 1",
        ] {
            assert!(!Sent::new(sent).may_name(cell), "{cell}");
        }
        let hosted = "https://cdn.test/base/img/a%20b.png";
        assert!(Sent::new(hosted).may_name("img/a b.png"));
        assert!(Sent::new(hosted).may_name(" ./img\\a b.png "));
        assert!(names(" ./img\\a b.png ", hosted));
        // A tab the parser drops makes the last part a `.`, which goes.
        assert!(names("a\\\t.", "https://h.test/a/"));
        assert!(Sent::new("https://h.test/a/").may_name("a\\\t."));
        assert_eq!(
            web_url(" HTTPS://x.test/a.png "),
            Some("HTTPS://x.test/a.png")
        );
        assert_eq!(web_url("httpx://x.test/"), None);
    }

    proptest::proptest! {
        #[test]
        fn the_quick_look_never_turns_away_a_cell_that_names_the_image(
            text in "[a-zA-Z0-9 ./\\\\%#?:é~_\\t\"<|@-]{0,10}",
            sent in "(https?://h\\.test|[a-z]{1,3}:)?[a-zA-Z0-9 ./\\\\%#?:é~_\\t\"<|@-]{0,14}",
            base in proptest::sample::select(vec!["https://h.test/", "https://h.test/b%20c/", "http://h.test/x/"]),
        ) {
            // Any text against any URL, and the URL validation makes of the text.
            proptest::prop_assert!(!names(&text, &sent) || Sent::new(&sent).may_name(&text));
            if let Some(parts) = local_path_parts(&text) {
                let mut hosted = Url::parse(base).unwrap();
                hosted.path_segments_mut().unwrap().pop_if_empty().extend(&parts);
                let hosted = hosted.to_string();
                proptest::prop_assert!(names(&text, &hosted));
                proptest::prop_assert!(Sent::new(&hosted).may_name(&text), "{} {}", text, hosted);
            }
        }

        #[test]
        fn a_url_is_found_as_the_parser_finds_it(text in "[a-zA-Z0-9 ./\\\\%#?:+~_\\t\\x01-]{0,12}") {
            let text = text.trim();
            proptest::prop_assert_eq!(
                is_url(text),
                Url::parse(text).is_ok_and(|url| url.scheme().len() > 1)
            );
        }
    }

    fn page(cards: &[Card]) -> String {
        let mut gallery = GalleryWriter::begin(Vec::new(), "jobs <1>.csv").unwrap();
        for card in cards {
            gallery.card(card).unwrap();
        }
        let (n, bytes) = gallery.finish().unwrap();
        assert_eq!(n, cards.len() as u64);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_hostile_row_shows_as_text() {
        let cells = KeyCells {
            id: Some("<i>x</i>".into()),
            prompt: Some("<script>alert(1)</script>".into()),
            image: Some(r#"https://x.test/"><img src=x onerror=alert(1)>"#.into()),
        };
        let places =
            Places::new(Path::new("/w/out/index.html"), Path::new("/w/out"), None).unwrap();
        let card = Card::invalid(7, &Map::new(), &cells, r#""><b>bad</b>"#, &places);
        let html = page(&[card]);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("src=\"https://x.test/&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\"")
        );
        assert!(html.contains("&quot;&gt;&lt;b&gt;bad&lt;/b&gt;"));
        assert!(html.contains("<dd>&lt;i&gt;x&lt;/i&gt;</dd>"));
        assert!(html.contains("<title>jobs &lt;1&gt;.csv</title>"));
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "only the page's own script"
        );
        assert!(html.contains("<label for=\"f-invalid\">invalid 1</label>"));
    }

    #[test]
    fn the_policy_allows_exactly_the_page_own_script_and_style() {
        let html = page(&[]);
        assert!(html.contains(&csp_hash(SCRIPT)));
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains(&format!("<style>{}</style>", style())));
        assert!(html.contains(&csp_hash(&style())));
        assert!(html.contains("no rows"));
    }
}
