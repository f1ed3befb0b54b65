//! The provider's input rules for a PixVerse V6 image-to-video submission,
//! as the real service applies them. They are written out here from the
//! provider's documentation, on purpose independently of `validate`: if the
//! validator gets a rule wrong, the simulator refuses what it lets through
//! (or the two disagree in a test), instead of both agreeing on the mistake.

use serde_json::{Map, Value};

use super::images::test_image;

/// Image URLs must use one of these schemes (compared without case).
const IMAGE_SCHEMES: [&str; 2] = ["http://", "https://"];
/// "URL of a .jpg/.jpeg/.png": the provider fetches the image and judges
/// its bytes, so a URL without an extension (a CDN transform, a signed
/// link) is taken, but one naming another image format is refused.
const REFUSED_EXTENSIONS: [&str; 9] = [
    ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg",
];
/// "file ≤ 10 MB".
const IMAGE_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// "width and height ≥ 300 px".
const IMAGE_MIN_SIDE: u32 = 300;
/// "aspect ratio between 1:2.5 and 2.5:1".
const IMAGE_MAX_RATIO: f64 = 2.5;
/// "Length limit: 0 - 2500", in Unicode characters.
const PROMPT_MAX_CHARS: usize = 2500;
/// "Length limit: 0 - 2500", in Unicode characters.
const NEGATIVE_PROMPT_MAX_CHARS: usize = 2500;
/// "Value range: [1, 15]" seconds.
const DURATION_MIN: i64 = 1;
const DURATION_MAX: i64 = 15;
/// "Value range: [0, 1]".
const CFG_SCALE_MIN: f64 = 0.0;
const CFG_SCALE_MAX: f64 = 1.0;
/// "Available values: 360p, 540p, 720p, 1080p".
const RESOLUTIONS: [&str; 4] = ["360p", "540p", "720p", "1080p"];

/// Checks a submission's body; `Err` is the message of a 400
/// `INVALID_REQUEST_BODY`. The first broken rule is reported. An image on
/// the simulator itself (under `{own_base}/test-images/`) is judged by
/// what is served there.
pub(super) fn check_request(request: &Value, own_base: &str) -> Result<(), String> {
    let object = request
        .as_object()
        .ok_or("the body must be a JSON object")?;
    check_image(object, own_base)?;
    check_prompts(object)?;
    check_duration(object)?;
    check_cfg_scale(object)?;
    check_resolution(object)?;
    check_types(object)
}

fn check_image(object: &Map<String, Value>, own_base: &str) -> Result<(), String> {
    let image = object
        .get("image")
        .and_then(Value::as_str)
        .ok_or("image is required")?;
    let lower = image.to_ascii_lowercase();
    if !IMAGE_SCHEMES.iter().any(|scheme| lower.starts_with(scheme)) {
        return Err("image must be an http(s) URL".into());
    }
    let path = lower.split(['?', '#']).next().unwrap_or("");
    if REFUSED_EXTENSIONS.iter().any(|ext| path.ends_with(ext)) {
        return Err("image must be a .jpg, .jpeg or .png".into());
    }
    match image
        .split(['?', '#'])
        .next()
        .and_then(|path| path.strip_prefix(own_base))
        .and_then(|path| path.strip_prefix("/test-images/"))
    {
        Some(name) => {
            let name = name.strip_prefix("redirect-").unwrap_or(name);
            check_served_image(name.strip_prefix("norange-").unwrap_or(name))
        }
        None => Ok(()),
    }
}

/// The provider's verdict on an image it fetched: one of the simulator's
/// test images.
fn check_served_image(name: &str) -> Result<(), String> {
    let image = test_image(name).ok_or("image could not be downloaded")?;
    let Some((format, width, height)) = image.seen else {
        return Err("image is not a valid image file".into());
    };
    if format != "png" && format != "jpeg" {
        return Err("image must be a JPG or PNG".into());
    }
    if image.len > IMAGE_MAX_BYTES {
        return Err("image file exceeds 10 MB".into());
    }
    if width < IMAGE_MIN_SIDE || height < IMAGE_MIN_SIDE {
        return Err("image width and height must be at least 300 px".into());
    }
    let ratio = f64::from(width) / f64::from(height);
    if !(1.0 / IMAGE_MAX_RATIO..=IMAGE_MAX_RATIO).contains(&ratio) {
        return Err("image aspect ratio must be between 1:2.5 and 2.5:1".into());
    }
    Ok(())
}

fn check_prompts(object: &Map<String, Value>) -> Result<(), String> {
    let prompt = object
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or("prompt is required")?;
    if prompt.chars().count() > PROMPT_MAX_CHARS {
        return Err(format!("prompt exceeds {PROMPT_MAX_CHARS} characters"));
    }
    if let Some(negative) = object.get("negative_prompt") {
        let negative = negative
            .as_str()
            .ok_or("negative_prompt must be a string")?;
        if negative.chars().count() > NEGATIVE_PROMPT_MAX_CHARS {
            return Err(format!(
                "negative_prompt exceeds {NEGATIVE_PROMPT_MAX_CHARS} characters"
            ));
        }
    }
    Ok(())
}

fn check_duration(object: &Map<String, Value>) -> Result<(), String> {
    let Some(duration) = object.get("duration") else {
        return Ok(());
    };
    let duration = duration.as_i64().ok_or("duration must be an integer")?;
    if !(DURATION_MIN..=DURATION_MAX).contains(&duration) {
        return Err(format!(
            "duration must be in [{DURATION_MIN}, {DURATION_MAX}]"
        ));
    }
    Ok(())
}

fn check_cfg_scale(object: &Map<String, Value>) -> Result<(), String> {
    let Some(cfg_scale) = object.get("cfg_scale") else {
        return Ok(());
    };
    let cfg_scale = cfg_scale.as_f64().ok_or("cfg_scale must be a number")?;
    if !(CFG_SCALE_MIN..=CFG_SCALE_MAX).contains(&cfg_scale) {
        return Err(format!(
            "cfg_scale must be in [{CFG_SCALE_MIN}, {CFG_SCALE_MAX}]"
        ));
    }
    Ok(())
}

fn check_resolution(object: &Map<String, Value>) -> Result<(), String> {
    let Some(resolution) = object.get("resolution") else {
        return Ok(());
    };
    let resolution = resolution.as_str().ok_or("resolution must be a string")?;
    if !RESOLUTIONS.contains(&resolution) {
        return Err(format!(
            "resolution must be one of {}",
            RESOLUTIONS.join(", ")
        ));
    }
    Ok(())
}

/// The optional fields that have a type but no range.
fn check_types(object: &Map<String, Value>) -> Result<(), String> {
    if let Some(seed) = object.get("seed")
        && !seed.is_i64()
    {
        return Err("seed must be an integer".into());
    }
    if let Some(flag) = object.get("generate_audio_switch")
        && !flag.is_boolean()
    {
        return Err("generate_audio_switch must be a boolean".into());
    }
    if let Some(thinking_type) = object.get("thinking_type")
        && !thinking_type.is_string()
    {
        return Err("thinking_type must be a string".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The check's answer for a minimal valid body with `field` set to
    /// `value`.
    fn with(field: &str, value: Value) -> Result<(), String> {
        let mut body = json!({"image": "https://x.io/a.png", "prompt": "p"});
        body[field] = value;
        check_request(&body, OWN)
    }

    const OWN: &str = "http://127.0.0.1:9";

    fn accepted(field: &str, value: Value) -> bool {
        with(field, value).is_ok()
    }

    #[test]
    fn a_full_valid_body_is_accepted() {
        let body = json!({
            "image": "https://x.io/a.png", "prompt": "p", "duration": 5,
            "cfg_scale": 0.5, "resolution": "720p", "seed": 123,
            "thinking_type": "auto", "negative_prompt": "blur",
            "generate_audio_switch": true,
        });
        assert_eq!(check_request(&body, OWN), Ok(()));
        assert!(check_request(&json!([body]), OWN).is_err());
        assert!(check_request(&json!("text"), OWN).is_err());
    }

    #[test]
    fn image_is_a_required_http_url_of_a_jpg_jpeg_or_png() {
        for good in [
            "https://x.io/a.png",
            "http://x.io/a.jpg",
            "https://x.io/dir/a.jpeg",
            "HTTPS://X.IO/A.PNG",
            "https://x.io/a.png?sig=abc",
            "https://x.io/a.jpg#frag",
            // Judged by its bytes, which this simulator cannot fetch.
            "https://images.example.com/photo-123?w=800&fm=png",
            "https://x.io/",
        ] {
            assert!(accepted("image", json!(good)), "{good}");
        }
        for bad in [
            "ftp://x.io/a.png",
            "file:///tmp/a.png",
            "x.io/a.png",
            "https://x.io/a.gif",
            "https://x.io/a.webp",
            "https://x.io/a.HEIC?fm=png",
        ] {
            assert!(!accepted("image", json!(bad)), "{bad}");
        }
        assert!(!accepted("image", json!(1)));
        assert!(check_request(&json!({"prompt": "p"}), OWN).is_err());
    }

    #[test]
    fn its_own_test_images_are_judged_by_what_is_served() {
        for good in [
            "good.png",
            "good.jpg",
            "photo-123?fm=png",
            "exif.jpg",
            "norange-good.png",
        ] {
            let url = format!("{OWN}/test-images/{good}");
            assert!(accepted("image", json!(url)), "{good}");
        }
        for (bad, message) in [
            ("small.png", "at least 300 px"),
            ("wide.jpg", "aspect ratio"),
            ("tall.png", "aspect ratio"),
            ("huge.png", "10 MB"),
            ("animation", "JPG or PNG"),
            ("page", "not a valid image"),
            ("fake.png", "not a valid image"),
            ("empty.png", "not a valid image"),
            ("missing.png", "could not be downloaded"),
        ] {
            let refusal = with("image", json!(format!("{OWN}/test-images/{bad}"))).unwrap_err();
            assert!(refusal.contains(message), "{bad}: {refusal}");
        }
    }

    #[test]
    fn prompts_are_at_most_2500_characters_not_bytes() {
        for field in ["prompt", "negative_prompt"] {
            let at_limit = "é".repeat(2500);
            assert!(at_limit.len() > 2500);
            assert!(accepted(field, json!(at_limit)), "{field}");
            assert!(accepted(field, json!("🎬".repeat(2500))), "{field}");
            assert!(!accepted(field, json!("é".repeat(2501))), "{field}");
            assert!(!accepted(field, json!("a".repeat(2501))), "{field}");
            assert!(accepted(field, json!("")), "{field}: 0 is allowed");
            assert!(!accepted(field, json!(5)), "{field}");
        }
        assert!(check_request(&json!({"image": "https://x.io/a.png"}), OWN).is_err());
    }

    #[test]
    fn duration_is_an_integer_from_1_to_15() {
        assert!(!accepted("duration", json!(0)));
        assert!(accepted("duration", json!(1)));
        assert!(accepted("duration", json!(15)));
        assert!(!accepted("duration", json!(16)));
        assert!(!accepted("duration", json!(-1)));
        assert!(!accepted("duration", json!(5.5)));
        assert!(!accepted("duration", json!("5")));
    }

    #[test]
    fn cfg_scale_is_a_number_from_0_to_1() {
        assert!(accepted("cfg_scale", json!(0)));
        assert!(accepted("cfg_scale", json!(0.0)));
        assert!(accepted("cfg_scale", json!(1)));
        assert!(accepted("cfg_scale", json!(1.0)));
        assert!(!accepted("cfg_scale", json!(-0.01)));
        assert!(!accepted("cfg_scale", json!(1.01)));
        assert!(!accepted("cfg_scale", json!("0.5")));
    }

    #[test]
    fn resolution_is_one_of_four() {
        for good in ["360p", "540p", "720p", "1080p"] {
            assert!(accepted("resolution", json!(good)), "{good}");
        }
        for bad in ["480p", "4k", "720", "1080P", " 720p", ""] {
            assert!(!accepted("resolution", json!(bad)), "{bad:?}");
        }
        assert!(!accepted("resolution", json!(720)));
    }

    #[test]
    fn seed_audio_and_thinking_type_have_types() {
        assert!(accepted("seed", json!(0)));
        assert!(accepted("seed", json!(-7)));
        assert!(accepted("seed", json!(i64::MAX)));
        assert!(!accepted("seed", json!(1.5)));
        assert!(!accepted("seed", json!("1")));
        assert!(accepted("generate_audio_switch", json!(true)));
        assert!(accepted("generate_audio_switch", json!(false)));
        assert!(!accepted("generate_audio_switch", json!("true")));
        assert!(!accepted("generate_audio_switch", json!(1)));
        assert!(accepted("thinking_type", json!("auto")));
        assert!(!accepted("thinking_type", json!(1)));
        assert!(!accepted("thinking_type", json!(true)));
    }

    #[test]
    fn messages_name_the_rule() {
        assert_eq!(
            with("duration", json!(16)),
            Err("duration must be in [1, 15]".to_owned())
        );
        assert_eq!(
            with("cfg_scale", json!(2)),
            Err("cfg_scale must be in [0, 1]".to_owned())
        );
        assert_eq!(
            with("resolution", json!("4k")),
            Err("resolution must be one of 360p, 540p, 720p, 1080p".to_owned())
        );
        assert_eq!(
            with("prompt", json!("a".repeat(2501))),
            Err("prompt exceeds 2500 characters".to_owned())
        );
    }
}
