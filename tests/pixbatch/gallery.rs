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
use pixbatch::gallery::{Card, GalleryWriter};
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
/// Headless, with a fresh profile given apart, nothing leaving the machine
/// (no background traffic, every host name unknown), the log on stderr.
const BROWSER_FLAGS: [&str; 12] = [
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
    "--window-size=1280,1000",
];

async fn visit(browser: &Path, url: &str, screenshot: Option<&Path>) -> Visit {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(browser);
    command
        .args(BROWSER_FLAGS)
        .arg("--virtual-time-budget=10000");
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

    // Driven over DevTools, the test waits for the page, however loaded
    // the machine is, rather than for a fixed budget of browser time.
    let page = scratch.out().join("index.html");
    let mut devtools = DevTools::start(&browser).await;
    let session = devtools.open(&file_url(&page, "top")).await;
    let seen = tokio::time::timeout(
        Duration::from_secs(120),
        devtools.evaluate(&session, FIRST_SCREEN),
    )
    .await
    .expect("the first screen loads within two minutes");
    let (_, reported) = devtools.close().await;
    assert_eq!(seen["cards"], 80, "{seen}");
    let live = seen["live"].as_u64().unwrap();
    assert!(
        (1..80).contains(&live),
        "the first cards' videos are put in place, not all 80: {seen}"
    );
    assert_eq!(seen["waiting"], 80 - live, "the others wait: {seen}");
    assert_eq!(
        seen["loaded"], seen["live"],
        "every video in place loads: {seen}"
    );
    assert!(reported.is_empty(), "the page reported: {reported:#?}");
}

/// Chromium driven over the DevTools protocol: its commands come in on fd
/// 3 and its answers go out on fd 4 (`--remote-debugging-pipe`), each a
/// JSON message ended by a NUL; a shell hands it our pipes as those fds.
struct DevTools {
    child: tokio::process::Child,
    to: tokio::process::ChildStdin,
    from: tokio::io::BufReader<tokio::process::ChildStdout>,
    /// Chromium's log (media errors), read as it comes.
    log: tokio::task::JoinHandle<String>,
    /// What the page reported: exceptions, console calls, and the
    /// browser's error entries (a resource that failed to load).
    reported: Vec<String>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl DevTools {
    async fn start(browser: &Path) -> DevTools {
        use std::process::Stdio;
        use tokio::io::AsyncReadExt as _;
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(browser)
            .args(BROWSER_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("Chromium starts");
        let mut stderr = child.stderr.take().unwrap();
        let log = tokio::spawn(async move {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log).await;
            log
        });
        DevTools {
            to: child.stdin.take().unwrap(),
            from: tokio::io::BufReader::new(child.stdout.take().unwrap()),
            child,
            log,
            reported: Vec::new(),
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends a command (to the page's session, if given) and returns its
    /// result; of the events that come before it, keeps what the page
    /// reported.
    async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        self.next_id += 1;
        let mut message =
            serde_json::json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).await.unwrap();
        loop {
            let mut answer = Vec::new();
            let n = self.from.read_until(0, &mut answer).await.unwrap();
            assert!(n > 0, "Chromium closed the pipe during {method}");
            answer.pop();
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            if answer["id"] == self.next_id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
            self.reported.extend(reported(&answer));
        }
    }

    /// Opens `url` in a new page; returns the page's session.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(
                None,
                "Target.createTarget",
                serde_json::json!({"url": "about:blank"}),
            )
            .await;
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                serde_json::json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        for domain in ["Page", "Runtime", "Log"] {
            self.call(
                Some(&session),
                &format!("{domain}.enable"),
                serde_json::json!({}),
            )
            .await;
        }
        self.call(
            Some(&session),
            "Page.navigate",
            serde_json::json!({"url": url}),
        )
        .await;
        session
    }

    /// Runs `expression` in the page, awaiting the promise it gives.
    async fn evaluate(&mut self, session: &str, expression: &str) -> serde_json::Value {
        let params = serde_json::json!({
            "expression": expression, "awaitPromise": true, "returnByValue": true
        });
        let result = self.call(Some(session), "Runtime.evaluate", params).await;
        assert!(result.get("exceptionDetails").is_none(), "{result}");
        result["result"]["value"].clone()
    }

    /// Ends the browser; returns its log and what the page reported.
    async fn close(mut self) -> (String, Vec<String>) {
        let _ = self
            .call(None, "Browser.close", serde_json::json!({}))
            .await;
        let _ = self.child.wait().await;
        drop(self.to);
        (self.log.await.unwrap(), self.reported)
    }
}

/// What an event says the page reported, if it is an exception, a console
/// call or an error entry of the browser's (warnings, such as the
/// browser's notes on slow frames, are not the page's failures).
fn reported(event: &serde_json::Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(format!("exception: {}", params["exceptionDetails"])),
        "Runtime.consoleAPICalled" => {
            Some(format!("console.{}: {}", params["type"], params["args"]))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            Some(format!("error: {}", params["entry"]))
        }
        _ => None,
    }
}

/// Scrolls the page from top to bottom a screen at a time, letting it
/// draw twice at each stop, then waits for the videos on screen to load;
/// returns the most videos alive at once, the error badges seen, and the
/// videos alive and loaded at the bottom.
/// Waits for the page and its first screen of videos; counts the cards,
/// the videos in place, loaded, and waiting in templates.
const FIRST_SCREEN: &str = r#"
(async () => {
  const drawn = () => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  await new Promise(done => document.readyState === "complete" ? done() : addEventListener("load", done));
  // The observer puts the first cards' media in place after a frame or two.
  for (let frame = 0; frame < 600 && !document.querySelector("main video"); frame += 1) {
    await drawn();
  }
  await Promise.all(Array.from(document.querySelectorAll("main video:not([data-loaded])"), video =>
    new Promise(done => {
      video.addEventListener("loadedmetadata", done, { once: true });
      video.addEventListener("error", done, { once: true });
    })));
  await drawn();
  return {
    cards: document.querySelectorAll("article.card").length,
    live: document.querySelectorAll("main video").length,
    loaded: document.querySelectorAll("video[data-loaded=yes]").length,
    waiting: Array.from(document.querySelectorAll("template"))
      .filter(template => template.content.querySelector("video")).length,
  };
})()
"#;

const SCROLL_TO_THE_BOTTOM: &str = r#"
(async () => {
  const drawn = () => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  await new Promise(done => document.readyState === "complete" ? done() : addEventListener("load", done));
  const live = () => document.querySelectorAll("main video").length;
  let most = 0, errors = 0, stops = 0;
  for (let y = 0; y < document.documentElement.scrollHeight; y += innerHeight) {
    scrollTo(0, y);
    await drawn();
    stops += 1;
    most = Math.max(most, live());
    errors += document.querySelectorAll("video[data-loaded=error]").length;
  }
  await Promise.all(Array.from(document.querySelectorAll("main video:not([data-loaded])"), video =>
    new Promise(done => {
      video.addEventListener("loadedmetadata", done, { once: true });
      video.addEventListener("error", done, { once: true });
    })));
  await drawn();
  return {
    most, errors, stops, live: live(),
    loaded: document.querySelectorAll("video[data-loaded=yes]").length,
    last_shown: document.querySelector("article:last-of-type video") !== null,
  };
})()
"#;

#[tokio::test]
async fn scrolling_through_1200_videos_keeps_only_those_near_the_screen_alive() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("index.html");
    std::fs::write(
        dir.path().join("clip.mp4"),
        pixbatch::simulator::video_content("clip", 0),
    )
    .unwrap();
    std::fs::copy(
        "sample-data/images/square-cat.jpeg",
        dir.path().join("cat.jpeg"),
    )
    .unwrap();
    let mut gallery = GalleryWriter::begin(std::fs::File::create(&page).unwrap(), "long").unwrap();
    for line in 2..1202 {
        gallery
            .card(&Card {
                id: format!("row-{line}").into(),
                line,
                state: "downloaded",
                prompt: Some(format!("Shot {line}").into()),
                image: Some("cat.jpeg".into()),
                video: Some("clip.mp4".into()),
                cost: None,
                reason: None,
            })
            .unwrap();
    }
    gallery.finish().unwrap();

    let mut devtools = DevTools::start(&browser).await;
    let session = devtools.open(&file_url(&page, "top")).await;
    let seen = tokio::time::timeout(
        Duration::from_secs(300),
        devtools.evaluate(&session, SCROLL_TO_THE_BOTTOM),
    )
    .await
    .expect("the scroll ends within five minutes");
    let (log, reported) = devtools.close().await;
    eprintln!("scrolled: {seen}");
    assert!(reported.is_empty(), "the page reported: {reported:#?}");
    assert!(seen["stops"].as_u64().unwrap() > 50, "{seen}");
    assert!(seen["last_shown"].as_bool().unwrap(), "{seen}");
    assert_eq!(seen["errors"], 0, "no video shown failed: {seen}");
    let most = seen["most"].as_u64().unwrap();
    assert!(
        (8..200).contains(&most),
        "a few screens of videos alive: {seen}"
    );
    assert_eq!(seen["loaded"], seen["live"], "{seen}");
    assert!(!log.contains("WebMediaPlayer"), "{log}");
}

#[tokio::test]
async fn an_invalid_row_shows_its_id_prompt_and_image_under_aliases_and_mappings() {
    let scratch = Scratch::new(fast_sim()).await;
    std::fs::create_dir(scratch.path("img")).unwrap();
    std::fs::copy(
        "sample-data/images/square-cat.jpeg",
        scratch.path("img/cat.jpeg"),
    )
    .unwrap();
    scratch.write_manifest(
        "Job ID,Image URL,Words,Duration\n\
         good,img/cat.jpeg,A good shot,5\n\
         bad,img/cat.jpeg,A shot too long,99\n",
    );
    let args = [
        "--skip-invalid",
        "--column",
        "prompt=Words",
        "--image-base-url",
        "http://127.0.0.1:9/batch/",
    ];
    scratch.run(&args).await;
    let html = std::fs::read_to_string(scratch.out().join("index.html")).unwrap();
    let (_, invalid) = html
        .split_once("<article class=\"card\" data-state=\"invalid\">")
        .expect("an invalid card");
    let invalid = &invalid[..invalid.find("</article>").unwrap()];
    assert!(invalid.contains("src=\"../img/cat.jpeg\""), "{invalid}");
    assert!(
        invalid.contains("<p class=\"prompt\">A shot too long</p>"),
        "{invalid}"
    );
    assert!(
        invalid.contains("<dt>id</dt><dd>bad</dd><dt>line</dt><dd>3</dd>"),
        "{invalid}"
    );
    assert!(invalid.contains("duration"), "the problem: {invalid}");
}
