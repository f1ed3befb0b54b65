//! Remote images checked before anything is paid for: the manifest's
//! distinct image URLs are gathered in the ledger, those without a recent
//! pass on record are fetched a few at a time (`api::ImageFetcher`, a
//! bounded read of each header), and what each held is recorded. The
//! ingest then reads the record (`IngestOptions::check_images`) and
//! reports each refusal at its row's image cell.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::ImageFetcher;
use crate::error::Error;
use crate::ingest::{ImagesChecked, IngestOptions, IngestReport, ingest_in_background};
use crate::ledger::{ImageCheck, Ledger, LedgerHandle, now_ms};
use crate::manifest::Manifest;
use crate::price::PriceTable;
use crate::report::ImageProgress;
use crate::validate::{
    Columns, MAX_IMAGE_BYTES, ValidationContext, remote_image, remote_image_refusal,
};

/// Images fetched at once.
pub const CONCURRENT_IMAGE_CHECKS: usize = 8;
/// The longest one image's check may take, connecting included.
pub const IMAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an image that passed stays trusted before it is fetched again.
/// Anything that did not pass is fetched again on every run: a missing or
/// wrong image may have been fixed since.
pub const PASS_KEPT_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// URLs read from the ledger at a time.
const PAGE: usize = 256;

/// How the images are fetched.
#[derive(Debug, Clone, Copy)]
pub struct ImageCheckSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl ImageCheckSettings {
    pub fn new(connect_timeout: Duration) -> ImageCheckSettings {
        ImageCheckSettings {
            connect_timeout,
            timeout: IMAGE_CHECK_TIMEOUT,
            concurrency: CONCURRENT_IMAGE_CHECKS,
        }
    }
}

/// A check of the manifest's remote images, about to start.
pub struct ImageChecking {
    /// A reader of the manifest of its own: it is read once here, and
    /// again by the ingest.
    pub reader: Manifest,
    pub settings: ImageCheckSettings,
    pub progress: ImageProgress,
}

/// Takes `reader`'s manifest into `ledger` (`ingest_in_background`), after
/// checking its remote images when `checking` is given. `None`: `stop`
/// came while images were being checked.
pub async fn check_and_ingest(
    reader: Manifest,
    context: ValidationContext,
    ledger: Ledger,
    options: IngestOptions,
    prices: Arc<PriceTable>,
    checking: Option<ImageChecking>,
    stop: &CancellationToken,
) -> Result<Option<(IngestReport, Ledger)>, Error> {
    let (images, ledger) = match checking {
        Some(checking) => match check_images(checking, &context, ledger, stop).await? {
            (Some(images), ledger) => (Some(images), ledger),
            (None, _) => return Ok(None),
        },
        None => (None, ledger),
    };
    let options = IngestOptions {
        check_images: images.is_some(),
        ..options
    };
    let (mut report, ledger) =
        ingest_in_background(reader, context, ledger, options, prices).await?;
    report.images = images;
    Ok(Some((report, ledger)))
}

/// Checks the remote images of the manifest, recording what each held in
/// `ledger`, which is handed back. `None`: `stop` was cancelled before
/// every image was checked.
pub async fn check_images(
    checking: ImageChecking,
    context: &ValidationContext,
    ledger: Ledger,
    stop: &CancellationToken,
) -> Result<(Option<ImagesChecked>, Ledger), Error> {
    let ImageChecking {
        reader: manifest,
        settings,
        progress,
    } = checking;
    let columns = Columns::new(context);
    let fresh_since = now_ms().saturating_sub(PASS_KEPT_FOR.as_millis() as i64);
    let (n_urls, n_to_fetch, ledger) = tokio::task::spawn_blocking(move || {
        let mut ledger = ledger;
        gather_urls(manifest, columns, &mut ledger)?;
        let (n_urls, n_to_fetch) = ledger.count_image_urls(fresh_since)?;
        Ok::<_, Error>((n_urls, n_to_fetch, ledger))
    })
    .await
    .map_err(|error| Error::Other(format!("the manifest reader stopped: {error}")))??;
    let mut checked = ImagesChecked {
        n_urls,
        n_fetched: 0,
    };
    if n_to_fetch == 0 {
        return Ok((Some(checked), ledger));
    }
    let fetcher = ImageFetcher::new(settings.connect_timeout, settings.timeout, MAX_IMAGE_BYTES);
    let (handle, thread) = LedgerHandle::spawn(ledger);
    progress.start(n_to_fetch, n_urls - n_to_fetch);
    let fetched = tokio::select! {
        fetched = fetch_all(&handle, &fetcher, settings.concurrency, fresh_since, &progress) => Some(fetched?),
        () = stop.cancelled() => None,
    };
    progress.finish();
    drop(handle);
    let ledger = thread
        .join()
        .map_err(|_| Error::Other("the ledger thread stopped".to_owned()))?;
    Ok((
        fetched.map(|n_fetched| {
            checked.n_fetched = n_fetched;
            checked
        }),
        ledger,
    ))
}

/// Every URL to fetch, page by page: each page fetched a few at a time and
/// recorded in one transaction. Returns how many were fetched.
async fn fetch_all(
    ledger: &LedgerHandle,
    fetcher: &ImageFetcher,
    concurrency: usize,
    fresh_since: i64,
    progress: &ImageProgress,
) -> Result<u64, Error> {
    let mut after = 0;
    let mut n_fetched = 0;
    loop {
        let page = ledger
            .call(move |ledger| ledger.image_urls_to_check(after, PAGE, fresh_since))
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(n_fetched);
        };
        after = *last;
        let checks: Vec<ImageCheck> = futures::stream::iter(page)
            .map(|(_, url)| async move {
                let image = fetcher.check(&url).await;
                let passed = remote_image_refusal(&image).is_none();
                progress.advance();
                ImageCheck { url, image, passed }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        n_fetched += checks.len() as u64;
        ledger
            .call(move |ledger| ledger.record_image_checks(&checks, now_ms()))
            .await?;
    }
}

/// Reads the manifest once, gathering the distinct remote image URLs (as
/// they are sent) in the ledger.
fn gather_urls(
    mut manifest: Manifest,
    mut columns: Columns,
    ledger: &mut Ledger,
) -> Result<(), Error> {
    let header = manifest.columns().iter().enumerate();
    columns.learn(1, header.map(|(idx, name)| (idx + 1, name.as_str())));
    let mut urls = ledger.begin_image_urls()?;
    while let Some(row) = manifest.next_row()? {
        let Ok(row) = row else { continue };
        if manifest.columns().len() > columns.n_learned() {
            let cells = row.cells.iter();
            columns.learn(row.line, cells.map(|cell| (cell.index, &*cell.name)));
        }
        if let Some((_, url)) = remote_image(&row, &columns) {
            urls.add(&url)?;
        }
    }
    urls.finish()?;
    Ok(())
}
