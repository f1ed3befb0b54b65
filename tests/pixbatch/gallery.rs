//! The gallery in a real browser: headless Chromium opens `OUT/index.html`
//! from disk after a simulated run with a hostile prompt and a failed row.
//!
//! Chromium comes from the system packages (`apt-get install chromium`;
//! `.ci/run` installs it). Without it these tests fail and say so, unless
//! `PIXBATCH_SKIP_BROWSER_TESTS=1` asks to skip them; `PIXBATCH_CHROMIUM`
//! names another binary. The browser resolves no host names (every name
//! maps to "not found"), so nothing leaves the machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pixbatch::error::EXIT_SOME_FAILED;
use pixbatch::simulator::Scripted;

use crate::support::{Scratch, fast_sim, path_str};

/// The hostile prompts: each would change the page's title or mark its
/// body if it ran.
const SCRIPT_PROMPT: &str = "<script>document.title='pwned'</script>";
const ATTRIBUTE_PROMPT: &str = "\"><img src=x onerror=\"document.body.dataset.pwned='yes'\">";

/// The browser to use, or `None` when the tests are to be skipped.
fn chromium() -> Option<PathBuf> {
    if std::env::var_os("PIXBATCH_SKIP_BROWSER_TESTS").is_some_and(|value| value == "1") {
        eprintln!("skipped: PIXBATCH_SKIP_BROWSER_TESTS=1");
        return None;
    }
    let browser = std::env::var_os("PIXBATCH_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        browser.is_file(),
        "the gallery tests need Chromium at {}: install it (`apt-get install chromium`, as .ci/run does), \
         name another binary with PIXBATCH_CHROMIUM, or skip them with PIXBATCH_SKIP_BROWSER_TESTS=1",
        browser.display()
    );
    Some(browser)
}

/// What the browser made of a page.
struct Visit {
    /// The DOM after the page's scripts ran.
    dom: String,
    /// The page's console messages (Chromium logs them to stderr).
    console: Vec<String>,
}

/// Opens `url` in headless Chromium (a fresh profile, no network), lets
/// the page run for up to 10 s of virtual time, and returns its DOM; with
/// `screenshot`, saves one there instead.
async fn visit(browser: &Path, url: &str, screenshot: Option<&Path>) -> Visit {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--window-size=1280,1000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    command.arg(url).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("Chromium finishes within two minutes")
        .expect("Chromium starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Chromium failed: {stderr}");
    Visit {
        dom: String::from_utf8_lossy(&output.stdout).into_owned(),
        console: stderr
            .lines()
            .filter(|line| line.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

fn file_url(path: &Path, fragment: &str) -> String {
    let mut url = url::Url::from_file_path(std::path::absolute(path).unwrap()).unwrap();
    url.set_fragment(Some(fragment));
    url.to_string()
}

/// A folder of the manifest's images, all local, sent under a base URL
/// nobody fetches: the gallery shows them from disk.
fn write_images_and_manifest(scratch: &Scratch) {
    std::fs::create_dir(scratch.path("img")).unwrap();
    for (from, to) in [
        ("sunrise-landscape.png", "img/sun rise.png"),
        ("square-cat.jpeg", "img/cat.jpeg"),
        ("harbor-portrait.jpg", "img/harbor.jpg"),
    ] {
        std::fs::copy(format!("sample-data/images/{from}"), scratch.path(to)).unwrap();
    }
    let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    scratch.write_manifest(&format!(
        "id,image,prompt\nsun,img/sun rise.png,A sunrise\ncat,img/cat.jpeg,{}\nharbor,img/harbor.jpg,{}\n\
         refused,img/cat.jpeg,A refused prompt\n",
        quoted(SCRIPT_PROMPT),
        quoted(ATTRIBUTE_PROMPT),
    ));
}

#[tokio::test]
async fn the_gallery_shows_every_row_plays_every_video_and_runs_no_manifest_markup() {
    let Some(browser) = chromium() else { return };
    let scratch = Scratch::new(fast_sim()).await;
    write_images_and_manifest(&scratch);
    // One row is refused by moderation (whichever is sent first).
    scratch
        .sim
        .script_submit([Scripted::error(400, "ILLEGAL_PROMPT")]);
    let base = ["--image-base-url", "http://127.0.0.1:9/batch/"];
    assert_eq!(scratch.run(&base).await, EXIT_SOME_FAILED);
    let page = scratch.out().join("index.html");

    let Visit { dom, console } = visit(&browser, &file_url(&page, "all"), None).await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(dom.matches("<article class=\"card\"").count(), 4, "{dom}");
    assert_eq!(dom.matches("<template").count(), 0, "#all shows everything");
    assert_eq!(dom.matches("<video").count(), 3, "{dom}");
    assert_eq!(dom.matches("data-loaded=\"yes\"").count(), 3, "{dom}");
    assert_eq!(dom.matches("data-state=\"failed\"").count(), 1, "{dom}");
    assert!(
        dom.contains("ILLEGAL_PROMPT"),
        "the failure's reason: {dom}"
    );
    // The images come from disk, relative to the page.
    assert!(dom.contains("src=\"../img/sun%20rise.png\""), "{dom}");
    // The hostile prompts are text: nothing ran, nothing was added.
    assert!(dom.contains("<title>jobs.csv</title>"), "{dom}");
    assert!(!dom.contains("pwned=\"yes\""), "{dom}");
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "only the page's own script"
    );
    assert_eq!(dom.matches("<img").count(), 4, "one image a card: {dom}");
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
    assert!(dom.contains("\"&gt;&lt;img src=x onerror=\"document.body.dataset.pwned='yes'\"&gt;"));

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("gallery-test");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("gallery.png");
    let _ = std::fs::remove_file(&screenshot);
    visit(&browser, &file_url(&page, "all"), Some(&screenshot)).await;
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|meta| meta.len() > 1000),
        "a screenshot at {}",
        screenshot.display()
    );
    eprintln!("gallery screenshot: {}", screenshot.display());
}

#[tokio::test]
async fn an_exported_gallery_links_from_its_own_folder_and_flags_a_missing_video() {
    let Some(browser) = chromium() else { return };
    let scratch = Scratch::new(fast_sim()).await;
    write_images_and_manifest(&scratch);
    let base = ["--image-base-url", "http://127.0.0.1:9/batch/"];
    scratch.run(&base).await;
    std::fs::remove_file(scratch.out().join("cat.mp4")).unwrap();
    let page = scratch.path("site/pages/gallery.html");
    let (manifest, page_arg) = (path_str(&scratch.manifest()), path_str(&page));
    let args = ["export", &manifest, "--format", "html", "-o", &page_arg];
    assert_eq!(scratch.command(&args, None).await, 0);

    let Visit { dom, console } = visit(&browser, &file_url(&page, "all"), None).await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("<video controls=\"\" preload=\"metadata\" playsinline=\"\" src=\"../../jobs-out/sun.mp4\""), "{dom}");
    assert!(dom.contains("src=\"../../img/sun%20rise.png\""), "{dom}");
    assert_eq!(dom.matches("data-loaded=\"yes\"").count(), 3, "{dom}");
    assert_eq!(dom.matches("data-loaded=\"error\"").count(), 1, "{dom}");
}

#[tokio::test]
async fn a_plain_visit_loads_only_the_cards_near_the_screen() {
    let Some(browser) = chromium() else { return };
    let scratch = Scratch::new(fast_sim()).await;
    std::fs::create_dir(scratch.path("img")).unwrap();
    std::fs::copy(
        "sample-data/images/square-cat.jpeg",
        scratch.path("img/cat.jpeg"),
    )
    .unwrap();
    let rows: String = (1..=80)
        .map(|i| format!("row-{i},img/cat.jpeg,Shot {i}\n"))
        .collect();
    scratch.write_manifest(&format!("id,image,prompt\n{rows}"));
    let base = ["--image-base-url", "http://127.0.0.1:9/batch/"];
    assert_eq!(scratch.run(&base).await, 0);

    let page = scratch.out().join("index.html");
    let url = url::Url::from_file_path(std::path::absolute(&page).unwrap()).unwrap();
    let Visit { dom, console } = visit(&browser, url.as_str(), None).await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(dom.matches("<article class=\"card\"").count(), 80);
    let n_loaded = dom.matches("data-loaded=\"yes\"").count();
    assert!(
        (4..80).contains(&n_loaded),
        "the first cards' videos load, not all 80: {n_loaded}"
    );
    assert_eq!(
        dom.matches("<template><video").count(),
        80 - n_loaded,
        "the others wait, and no video shown failed"
    );
}
