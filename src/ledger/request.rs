//! How a job's request and input cells are stored (schemas 7 and 8): each
//! piece of text once. The request lives in columns from which its exact JSON
//! body is rebuilt (`VideoRequest::to_json` is deterministic), keyed by the
//! first 4 bytes of its sha-256 (`thinking_type` NULL for `auto`); the input keeps only the cells' values, the keys
//! once per distinct header (`input_shapes`), and a cell equal to the job
//! id or a request field is a reference to it.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ToSql;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::{LedgerError, Result};
use super::records::StoredInput;
use crate::job::{JobId, JobSpec, VideoRequest, json_hash};

/// The request's columns, in the order `read_request` and
/// `RequestColumns::params` use.
pub(super) const REQUEST_COLUMNS: [&str; 9] = [
    "image",
    "prompt",
    "duration",
    "cfg_scale",
    "resolution",
    "seed",
    "thinking_type",
    "negative_prompt",
    "generate_audio",
];

/// `REQUEST_COLUMNS` of the table aliased `alias`, comma-separated.
pub(super) fn request_columns(alias: &str) -> String {
    REQUEST_COLUMNS
        .iter()
        .map(|column| format!("{alias}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQL for the hex sha-256 of the request body rebuilt from the columns of
/// `alias` (the `pixbatch_request_hash` function), as the record of paid
/// requests stores it.
pub(super) fn request_hash_sql(alias: &str) -> String {
    format!("{HASH_FUNCTION}({})", request_columns(alias))
}

/// SQL saying that the rows `a` and `b` hold the same request: every
/// column equal (`cfg_scale` is kept as its JSON text, so equal columns
/// are equal bodies).
pub(super) fn same_request_sql(a: &str, b: &str) -> String {
    REQUEST_COLUMNS
        .iter()
        .map(|column| format!("{a}.{column} IS {b}.{column}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

const HASH_FUNCTION: &str = "pixbatch_request_hash";

/// The index key of a request body: the first `KEY_BYTES` bytes of its
/// sha-256. Equal keys are checked for full equality wherever they decide
/// anything, so a short key only costs a comparison now and then (at a
/// million rows, a key shared by chance is rare).
pub(super) fn request_key(json: &str) -> [u8; KEY_BYTES] {
    let digest = Sha256::digest(json.as_bytes());
    let mut key = [0u8; KEY_BYTES];
    key.copy_from_slice(&digest[..KEY_BYTES]);
    key
}

/// How many bytes of the hash `request_key` keeps (schema 8; 8 before).
pub(super) const KEY_BYTES: usize = 4;

/// SQL for the `request_key` of a hex sha-256 `hash` (an SQL expression).
pub(super) fn key_of_hash_sql(hash: &str) -> String {
    format!("unhex(substr({hash}, 1, {}))", 2 * KEY_BYTES)
}

/// The `thinking_type` every request had until the field is set otherwise;
/// stored as NULL (schema 8), four bytes a row fewer.
const DEFAULT_THINKING: &str = "auto";

/// The stored `thinking_type` (NULL for `DEFAULT_THINKING`) of an SQL
/// expression holding the request's.
pub(super) fn stored_thinking_sql(thinking: &str) -> String {
    format!("NULLIF({thinking}, '{DEFAULT_THINKING}')")
}

/// A request as the ledger binds it: `cfg_scale` as the exact text
/// `to_json` writes for it, `duration` and `seed` as integers.
pub(super) struct RequestColumns<'r> {
    request: &'r VideoRequest,
    duration: i64,
    cfg_scale: Option<String>,
    /// `None` for `DEFAULT_THINKING`.
    thinking_type: Option<&'r str>,
}

impl<'r> RequestColumns<'r> {
    pub(super) fn of(request: &'r VideoRequest) -> RequestColumns<'r> {
        RequestColumns {
            request,
            duration: i64::from(request.duration),
            cfg_scale: request
                .cfg_scale
                .map(|scale| serde_json::to_string(&scale).expect("a number always serializes")),
            thinking_type: Some(request.thinking_type.as_str())
                .filter(|thinking| *thinking != DEFAULT_THINKING),
        }
    }

    /// The 9 values of `REQUEST_COLUMNS`.
    pub(super) fn params(&self) -> [&dyn ToSql; 9] {
        let request = self.request;
        [
            &request.image,
            &request.prompt,
            &self.duration,
            &self.cfg_scale,
            &request.resolution,
            &request.seed,
            &self.thinking_type,
            &request.negative_prompt,
            &request.generate_audio_switch,
        ]
    }
}

/// The request stored in `REQUEST_COLUMNS` starting at column `first`;
/// `None` when it does not read (a row whose stored body did not parse
/// when the ledger was migrated).
pub(super) fn read_request(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<Option<VideoRequest>> {
    let (Some(image), Some(prompt), Some(duration), Some(resolution)) = (
        row.get::<_, Option<String>>(first)?,
        row.get::<_, Option<String>>(first + 1)?,
        row.get::<_, Option<i64>>(first + 2)?,
        row.get::<_, Option<String>>(first + 4)?,
    ) else {
        return Ok(None);
    };
    let Some(generate_audio_switch) = row.get::<_, Option<bool>>(first + 8)? else {
        return Ok(None);
    };
    let thinking_type = row
        .get::<_, Option<String>>(first + 6)?
        .unwrap_or_else(|| DEFAULT_THINKING.to_owned());
    let cfg_scale = match row.get::<_, Option<String>>(first + 3)? {
        None => None,
        Some(text) => match serde_json::from_str::<f64>(&text) {
            Ok(scale) => Some(scale),
            Err(_) => return Ok(None),
        },
    };
    let Ok(duration) = u32::try_from(duration) else {
        return Ok(None);
    };
    Ok(Some(VideoRequest {
        image,
        prompt,
        duration,
        cfg_scale,
        resolution,
        seed: row.get(first + 5)?,
        thinking_type,
        negative_prompt: row.get(first + 7)?,
        generate_audio_switch,
    }))
}

/// The exact body to send for `job_id`, rebuilt from its columns and
/// checked against the stored key: a body that does not rebuild, or
/// rebuilds to another request, is an error, never sent.
pub(super) fn checked_body(
    job_id: &JobId,
    request: Option<VideoRequest>,
    key: Option<&[u8]>,
) -> Result<String> {
    let body = request.map(|request| request.to_json());
    match body {
        Some(body) if key == Some(&request_key(&body)[..]) => Ok(body),
        _ => Err(LedgerError::RequestMismatch {
            job_id: job_id.clone(),
        }),
    }
}

/// Registers `pixbatch_request_hash(REQUEST_COLUMNS...)` on `conn`: the hex
/// sha-256 of the rebuilt body, NULL when it does not rebuild.
pub(super) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        HASH_FUNCTION,
        REQUEST_COLUMNS.len() as i32,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| {
            let column = |index: usize| context.get_raw(index);
            let text = |index: usize| column(index).as_str_or_null().ok().flatten();
            let int = |index: usize| column(index).as_i64_or_null().ok().flatten();
            let cfg_scale = match text(3) {
                None => None,
                Some(text) => match serde_json::from_str::<f64>(text) {
                    Ok(scale) => Some(scale),
                    Err(_) => return Ok(None),
                },
            };
            let thinking = text(6).unwrap_or(DEFAULT_THINKING);
            let fields = (text(0), text(1), int(2), text(4), int(8));
            let (Some(image), Some(prompt), Some(duration), Some(resolution), Some(audio)) = fields
            else {
                return Ok(None);
            };
            let Ok(duration) = u32::try_from(duration) else {
                return Ok(None);
            };
            let request = VideoRequest {
                image: image.to_owned(),
                prompt: prompt.to_owned(),
                duration,
                cfg_scale,
                resolution: resolution.to_owned(),
                seed: int(5),
                thinking_type: thinking.to_owned(),
                negative_prompt: text(7).map(str::to_owned),
                generate_audio_switch: audio != 0,
            };
            Ok(Some(json_hash(&request.to_json())))
        },
    )
}

/// What a cell may refer to instead of repeating it (3 bits a cell).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ref {
    Literal = 0,
    JobId = 1,
    Prompt = 2,
    Image = 3,
    Duration = 4,
    Resolution = 5,
}

/// Cells past this many are always stored as written (3 bits each in an
/// `i64`).
const MAX_REFERENCED_CELLS: usize = 21;

/// What a string cell `text` of a row of `spec` refers to.
fn reference(spec: &JobSpec, text: &str) -> Ref {
    let request = &spec.request;
    if text == spec.job_id.0 {
        Ref::JobId
    } else if text == request.prompt {
        Ref::Prompt
    } else if text == request.image {
        Ref::Image
    } else if text == request.resolution {
        Ref::Resolution
    } else if text.parse::<u32>().ok() == Some(request.duration)
        && text == request.duration.to_string()
    {
        Ref::Duration
    } else {
        Ref::Literal
    }
}

/// The input cells of `spec` as stored: which cells are references (3 bits
/// each, cell 0 lowest) and the values of the others, as a JSON array.
pub(super) fn encode_cells(spec: &JobSpec) -> (i64, String) {
    let mut refs = 0i64;
    let mut literal = Vec::with_capacity(spec.input.len());
    for (index, value) in spec.input.values().enumerate() {
        let found = match value {
            Value::String(text) if index < MAX_REFERENCED_CELLS => reference(spec, text),
            _ => Ref::Literal,
        };
        if found == Ref::Literal {
            literal.push(value);
        } else {
            refs |= (found as i64) << (3 * index);
        }
    }
    let cells = serde_json::to_string(&literal).expect("JSON values always serialize");
    (refs, cells)
}

/// The input cells stored by `encode_cells`, keyed by `keys`, given the
/// job's id and request (a reference to a request that does not read is
/// an empty cell).
pub(super) fn decode_cells(
    keys: &[String],
    refs: i64,
    cells: Option<&str>,
    job_id: &JobId,
    request: Option<&VideoRequest>,
) -> Map<String, Value> {
    let literal: Vec<Value> = cells
        .and_then(|cells| serde_json::from_str(cells).ok())
        .unwrap_or_default();
    let mut literal = literal.into_iter();
    let mut input = Map::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        let code = match index < MAX_REFERENCED_CELLS {
            true => (refs >> (3 * index)) & 0b111,
            false => 0,
        };
        let text = |field: fn(&VideoRequest) -> String| {
            request.map_or(Value::Null, |request| Value::String(field(request)))
        };
        let value = match code {
            1 => Value::String(job_id.0.clone()),
            2 => text(|request| request.prompt.clone()),
            3 => text(|request| request.image.clone()),
            4 => text(|request| request.duration.to_string()),
            5 => text(|request| request.resolution.clone()),
            _ => literal.next().unwrap_or(Value::Null),
        };
        input.insert(key.clone(), value);
    }
    input
}

/// The input cells stored in `input_shape, input_refs, input_cells` from
/// column `first` of `row`, of the job `job_id` with `request`.
pub(super) fn stored_input(
    row: &rusqlite::Row<'_>,
    first: usize,
    shapes: &mut Shapes<'_>,
    job_id: &JobId,
    request: Option<&VideoRequest>,
) -> rusqlite::Result<Map<String, Value>> {
    let keys = shapes.keys(row.get(first)?)?;
    let refs: i64 = row.get(first + 1)?;
    let cells = row.get_ref(first + 2)?.as_str_or_null()?;
    Ok(decode_cells(&keys, refs, cells, job_id, request))
}

/// `stored_input`, left to be decoded when it is first read.
pub(super) fn stored_input_undecoded(
    row: &rusqlite::Row<'_>,
    first: usize,
    shapes: &mut Shapes<'_>,
) -> rusqlite::Result<StoredInput> {
    Ok(StoredInput::new(
        shapes.keys(row.get(first)?)?,
        row.get(first + 1)?,
        row.get(first + 2)?,
    ))
}

/// The keys of each input shape read so far (a manifest has one, or a few
/// for JSON Lines), so a million rows do not parse their keys a million
/// times.
pub(super) struct Shapes<'c> {
    conn: &'c Connection,
    known: HashMap<i64, Arc<[String]>>,
}

impl<'c> Shapes<'c> {
    pub(super) fn new(conn: &'c Connection) -> Shapes<'c> {
        Shapes {
            conn,
            known: HashMap::new(),
        }
    }

    /// The keys of shape `shape` (none for an unknown one).
    pub(super) fn keys(&mut self, shape: Option<i64>) -> rusqlite::Result<Arc<[String]>> {
        let shape = shape.unwrap_or(0);
        if !self.known.contains_key(&shape) {
            let keys: Option<String> = rusqlite::OptionalExtension::optional(
                self.conn
                    .prepare_cached("SELECT keys FROM input_shapes WHERE shape = ?1")?
                    .query_row([shape], |row| row.get(0)),
            )?;
            let keys: Vec<String> = keys
                .and_then(|keys| serde_json::from_str(&keys).ok())
                .unwrap_or_default();
            self.known.insert(shape, keys.into());
        }
        Ok(Arc::clone(&self.known[&shape]))
    }
}

/// The shape (`input_shapes.shape`) of rows with the keys `keys`, added if new.
pub(super) fn shape_of<'k>(
    conn: &Connection,
    keys: impl Iterator<Item = &'k String>,
) -> Result<i64> {
    let keys: Vec<&String> = keys.collect();
    let keys = serde_json::to_string(&keys).expect("strings always serialize");
    conn.prepare_cached(
        "INSERT INTO input_shapes (keys) VALUES (?1) ON CONFLICT (keys) DO NOTHING",
    )?
    .execute([&keys])?;
    Ok(conn
        .prepare_cached("SELECT shape FROM input_shapes WHERE keys = ?1")?
        .query_row([&keys], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of set and unset optional fields, with unicode
    /// and characters JSON escapes.
    fn requests() -> Vec<VideoRequest> {
        let base = crate::job::tests::request();
        let mut all = vec![base.clone()];
        for prompt in [
            "a \"quoted\" cat\\dog\n\ttab \u{1}\u{1f} end",
            "日本語のプロンプト — émigré 🎬 \u{2028}\u{2029}",
            "</script><b>&amp;</b> 'single'",
            "",
        ] {
            for (cfg_scale, seed, negative) in [
                (Some(0.5), Some(42), Some("blur, \"noise\" 🙃")),
                (Some(0.1 + 0.2), Some(i64::MIN), None),
                (Some(1.0), Some(-1), Some("")),
                (Some(0.0), None, None),
                (None, Some(i64::MAX), Some("ß")),
            ] {
                all.push(VideoRequest {
                    prompt: prompt.to_owned(),
                    image: format!("https://example.com/{prompt}.png?a=1&b=\"2\""),
                    cfg_scale,
                    seed,
                    negative_prompt: negative.map(str::to_owned),
                    generate_audio_switch: seed.is_some(),
                    duration: 10,
                    resolution: "1080p".into(),
                    thinking_type: "enabled".into(),
                });
            }
        }
        all
    }

    #[test]
    fn the_rebuilt_body_is_byte_identical_to_to_json() {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE r (key BLOB, {}, cfg_real REAL)",
            REQUEST_COLUMNS.join(", ")
        ))
        .unwrap();
        let placeholders = (1..=10).map(|n| format!("?{n}")).collect::<Vec<_>>();
        for request in requests() {
            let body = request.to_json();
            let columns = RequestColumns::of(&request);
            let key = request_key(&body).to_vec();
            let mut params: Vec<&dyn ToSql> = vec![&key];
            params.extend(columns.params());
            conn.execute("DELETE FROM r", []).unwrap();
            conn.execute(
                &format!(
                    "INSERT INTO r (key, {}) VALUES ({})",
                    REQUEST_COLUMNS.join(", "),
                    placeholders.join(", ")
                ),
                params.as_slice(),
            )
            .unwrap();
            let sql = format!(
                "SELECT key, {}, {} FROM r",
                REQUEST_COLUMNS.join(", "),
                request_hash_sql("r")
            );
            let (rebuilt, hash) = conn
                .query_row(&sql, [], |row| {
                    let key: Vec<u8> = row.get(0)?;
                    let read = read_request(row, 1)?;
                    let body = checked_body(&JobId("j".into()), read, Some(&key)).unwrap();
                    Ok((body, row.get::<_, String>(10)?))
                })
                .unwrap();
            assert_eq!(rebuilt, body, "byte for byte");
            assert_eq!(hash, request.content_hash(), "the SQL function agrees");
        }
    }

    #[test]
    fn a_body_that_rebuilds_to_another_request_is_refused() {
        let request = crate::job::tests::request();
        let mut other = request.clone();
        other.prompt.push('!');
        let key = request_key(&request.to_json());
        let job = JobId("j".into());
        assert!(checked_body(&job, Some(other), Some(&key)).is_err());
        assert!(checked_body(&job, None, Some(&key)).is_err());
        assert!(checked_body(&job, Some(request.clone()), None).is_err());
        assert_eq!(
            checked_body(&job, Some(request.clone()), Some(&key)).unwrap(),
            request.to_json()
        );
    }

    #[test]
    fn cells_equal_to_the_request_are_references_and_read_back_as_written() {
        let request = VideoRequest {
            prompt: "a \"cat\" 🐈".into(),
            ..crate::job::tests::request()
        };
        let mut input = Map::new();
        input.insert("id".into(), Value::String("row-1".into()));
        input.insert("image".into(), Value::String(request.image.clone()));
        input.insert("prompt".into(), Value::String(request.prompt.clone()));
        input.insert("duration".into(), Value::String("5".into()));
        input.insert("resolution".into(), Value::String("720p".into()));
        input.insert("seconds".into(), Value::String("05".into()));
        input.insert("n".into(), serde_json::json!(5));
        input.insert("notes".into(), Value::String("batch 0".into()));
        input.insert("nested".into(), serde_json::json!({"a": [1, null, true]}));
        let spec = JobSpec {
            job_id: JobId("row-1".into()),
            explicit_id: true,
            line: 2,
            request: request.clone(),
            input: input.clone(),
        };
        let (refs, cells) = encode_cells(&spec);
        assert_eq!(cells, r#"["05",5,"batch 0",{"a":[1,null,true]}]"#);
        let keys: Vec<String> = input.keys().cloned().collect();
        let decoded = decode_cells(&keys, refs, Some(&cells), &spec.job_id, Some(&request));
        assert_eq!(decoded, input);
        assert_eq!(
            serde_json::to_string(&decoded).unwrap(),
            serde_json::to_string(&input).unwrap(),
            "in the same order"
        );
    }
}
