//! Turns a raw manifest row into a `JobSpec`, or into every problem it has.
//! This is the only place the API's input rules are checked; everything
//! downstream takes a `JobSpec` and trusts it. It does no I/O: local images
//! are read through the context's `ImageProbe`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use url::Url;

use crate::image::{FileProbe, ImageInfo, ImageProbe, RemoteImage};
use crate::job::{JobId, JobSpec, VideoRequest, hashed_job_id};
use crate::ledger::KeyCells;
use crate::row::{Cell, Problem, RawRow};

pub const MAX_PROMPT_CHARS: usize = 2500;
pub const MAX_IMAGE_BYTES: u64 = 10 * 1024 * 1024;
pub const MIN_IMAGE_SIDE: u32 = 300;
pub const DURATION_RANGE: std::ops::RangeInclusive<i64> = 1..=15;
pub const DEFAULT_DURATION: u32 = 5;
pub const RESOLUTIONS: [&str; 4] = ["360p", "540p", "720p", "1080p"];
pub const DEFAULT_RESOLUTION: &str = "720p";
pub const DEFAULT_THINKING_TYPE: &str = "auto";
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// Extensions of image formats the API does not take: an image URL ending
/// in one is an error whether or not its bytes are checked. Any other
/// ending (none, `.php`, `photo-123?fm=png`) says nothing about the format.
const OTHER_IMAGE_EXTENSIONS: [&str; 14] = [
    "gif", "webp", "bmp", "tif", "tiff", "heic", "heif", "avif", "svg", "ico", "jxl", "jp2", "psd",
    "raw",
];

/// What validation needs to know beyond the row itself.
#[derive(Clone)]
pub struct ValidationContext {
    /// Local image paths are relative to this folder (the manifest's).
    pub manifest_dir: PathBuf,
    /// When set, local image paths are sent as URLs under this base.
    pub image_base_url: Option<Url>,
    /// Reads local images' headers (the file system, or a fake in tests).
    pub probe: Arc<dyn ImageProbe>,
    /// `--column FIELD=HEADER`: headers sent as a field whatever their name.
    pub columns: Vec<ColumnMapping>,
}

impl ValidationContext {
    /// A context that reads local images from the file system.
    pub fn new(manifest_dir: PathBuf, image_base_url: Option<Url>) -> ValidationContext {
        ValidationContext {
            manifest_dir,
            image_base_url,
            probe: Arc::new(FileProbe),
            columns: Vec::new(),
        }
    }

    /// The same context, with these `--column` mappings.
    pub fn with_columns(self, columns: Vec<ColumnMapping>) -> ValidationContext {
        ValidationContext { columns, ..self }
    }

    /// The same context, reading local images through `probe`.
    pub fn with_probe(self, probe: Arc<dyn ImageProbe>) -> ValidationContext {
        ValidationContext { probe, ..self }
    }
}

impl fmt::Debug for ValidationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationContext")
            .field("manifest_dir", &self.manifest_dir)
            .field("image_base_url", &self.image_base_url)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// The API fields a column can name. Headers are compared after
/// normalising (see `HeaderKey`), against the field names, the aliases in
/// `ALIASES` and the `--column` mappings; any other column is carried
/// along, not sent, unless it looks like a misspelled field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Image,
    Prompt,
    Duration,
    CfgScale,
    Resolution,
    Seed,
    ThinkingType,
    NegativePrompt,
    GenerateAudio,
}

impl Field {
    const ALL: [Field; 10] = [
        Field::Id,
        Field::Image,
        Field::Prompt,
        Field::Duration,
        Field::CfgScale,
        Field::Resolution,
        Field::Seed,
        Field::ThinkingType,
        Field::NegativePrompt,
        Field::GenerateAudio,
    ];

    /// The field's own name: the API's (`id` is pixbatch's), and what
    /// `--column` takes.
    fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Image => "image",
            Field::Prompt => "prompt",
            Field::Duration => "duration",
            Field::CfgScale => "cfg_scale",
            Field::Resolution => "resolution",
            Field::Seed => "seed",
            Field::ThinkingType => "thinking_type",
            Field::NegativePrompt => "negative_prompt",
            Field::GenerateAudio => "generate_audio_switch",
        }
    }
}

/// Spreadsheet spellings accepted besides the field names, written as
/// headers compare (lower case, words joined by `_`, no unit). Kept short
/// on purpose; the README's manifest table lists them.
const ALIASES: [(&str, Field); 7] = [
    ("job_id", Field::Id),
    ("image_url", Field::Image),
    ("image_link", Field::Image),
    ("image_path", Field::Image),
    ("cfg", Field::CfgScale),
    ("generate_audio", Field::GenerateAudio),
    ("audio", Field::GenerateAudio),
];

/// The units a duration header may name (`Duration (s)`); another unit
/// (`Duration (ms)`) is a header problem, not a silent 1000-fold mistake.
const SECONDS: [&str; 5] = ["s", "sec", "secs", "second", "seconds"];

/// Headers this close to a field name or alias (edit distance, with
/// transpositions) are reported as misspellings...
const MAX_TYPO_DISTANCE: usize = 2;
/// ...when both are at least this long, so short names make no noise...
const MIN_TYPO_LENGTH: usize = 4;
/// ...and only one edit away when either is shorter than this (`side` is
/// not `seed`, nor `page` `image`).
const MIN_TWO_TYPO_LENGTH: usize = 6;

/// Every name a header can match: the field names, then the aliases.
fn field_names() -> impl Iterator<Item = (&'static str, Field)> {
    Field::ALL
        .into_iter()
        .map(|field| (field.name(), field))
        .chain(ALIASES)
}

/// A header as it is compared: lower case, surrounding whitespace gone,
/// spaces, hyphens and underscores alike (words joined by `_`), and a
/// trailing unit in parentheses split off: `Duration (s)` is `duration`
/// in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderKey {
    base: String,
    unit: Option<String>,
}

impl HeaderKey {
    fn of(name: &str) -> HeaderKey {
        let lower = name.trim().to_lowercase();
        let (base, unit) = match lower
            .strip_suffix(')')
            .and_then(|rest| rest.rsplit_once('('))
        {
            Some((base, unit)) => (base, Some(words(unit))),
            None => (lower.as_str(), None),
        };
        HeaderKey {
            base: words(base),
            unit,
        }
    }
}

fn words(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// What a header means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// Sent as this field.
    Field(Field),
    /// Probably meant as this field, but not recognised: a header problem.
    Unknown(Field),
    /// Not a field: carried into the results, not sent.
    Carried,
}

fn meaning(name: &str, mappings: &[ColumnMapping]) -> Meaning {
    let key = HeaderKey::of(name);
    if let Some(mapping) = mappings.iter().find(|mapping| mapping.key == key) {
        return mapping.field.map_or(Meaning::Carried, Meaning::Field);
    }
    if let Some((_, field)) = field_names().find(|(known, _)| *known == key.base) {
        return match key.unit {
            Some(unit) if field == Field::Duration && !SECONDS.contains(&unit.as_str()) => {
                Meaning::Unknown(field)
            }
            _ => Meaning::Field(field),
        };
    }
    misspelled(&key.base).map_or(Meaning::Carried, Meaning::Unknown)
}

/// The field `base` is probably a misspelling of: the nearest field name
/// or alias within the typo distance, both at least `MIN_TYPO_LENGTH`
/// characters long.
fn misspelled(base: &str) -> Option<Field> {
    let length = base.chars().count();
    if length < MIN_TYPO_LENGTH {
        return None;
    }
    let allowed = |known: &str| match length.min(known.len()) {
        shortest if shortest < MIN_TYPO_LENGTH => 0,
        shortest if shortest < MIN_TWO_TYPO_LENGTH => 1,
        _ => MAX_TYPO_DISTANCE,
    };
    field_names()
        .filter(|(known, _)| known.len().abs_diff(length) <= allowed(known))
        .map(|(known, field)| (edit_distance(base, known), known, field))
        .filter(|(distance, known, _)| *distance <= allowed(known))
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, _, field)| field)
}

/// The edit distance between `a` and `b` in characters: insertions,
/// deletions, substitutions and swaps of two neighbours each count one
/// (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut two_back = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            current[j] = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(two_back[j - 2] + 1);
            }
        }
        two_back = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

/// `--column FIELD=HEADER`: the column HEADER (matched like any header)
/// is sent as FIELD, whatever its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// `None` (`--column -=HEADER`): carry the column as it is, never sent.
    field: Option<Field>,
    header: String,
    key: HeaderKey,
}

impl ColumnMapping {
    /// Parses `FIELD=HEADER`; FIELD is an API field name, in any case, or
    /// `-` to carry the column as it is (a column that only looks like a
    /// field, such as `speed` next to `seed`).
    pub fn parse(text: &str) -> Result<ColumnMapping, String> {
        let fields = Field::ALL.map(Field::name).join(", ");
        let (field, header) = text.split_once('=').unwrap_or((text, ""));
        let field = match field.trim() {
            "-" => None,
            name => Some(
                Field::ALL
                    .into_iter()
                    .find(|known| known.name().eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        format!(
                            "--column {text:?}: {name:?} is not an API field; FIELD is one of {fields}, \
                             or - to keep the column as it is"
                        )
                    })?,
            ),
        };
        let header = header.trim();
        if header.is_empty() {
            return Err(format!(
                "--column {text:?}: name the column after `=`, as in --column {}=HEADER",
                field.map_or("-", Field::name)
            ));
        }
        Ok(ColumnMapping {
            field,
            header: header.to_owned(),
            key: HeaderKey::of(header),
        })
    }

    /// Parses every `--column`; one header mapped twice is refused.
    pub fn parse_all(texts: &[String]) -> Result<Vec<ColumnMapping>, String> {
        let mut mappings: Vec<ColumnMapping> = Vec::with_capacity(texts.len());
        for text in texts {
            let mapping = ColumnMapping::parse(text)?;
            if let Some(first) = mappings.iter().find(|seen| seen.key == mapping.key) {
                return Err(format!(
                    "--column {text:?}: column {:?} is already mapped to {}",
                    mapping.header,
                    first.field.map_or("-", Field::name)
                ));
            }
            mappings.push(mapping);
        }
        Ok(mappings)
    }

    /// The flag as a shell word: `duration=durration`, or quoted.
    fn flag(field: Option<Field>, header: &str) -> String {
        let word = format!("{}={header}", field.map_or("-", Field::name));
        if word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.=".contains(c))
        {
            word
        } else {
            format!("'{}'", word.replace('\'', r"'\''"))
        }
    }
}

/// A header that looks meant as `field` but is not recognised.
fn unknown_column(line: u64, index: usize, name: &str, field: Field) -> Problem {
    let hint = match HeaderKey::of(name).unit {
        Some(unit) if field == Field::Duration && !SECONDS.contains(&unit.as_str()) => {
            format!(" (in seconds, not {unit})")
        }
        _ => String::new(),
    };
    let message = format!(
        "unknown column {name:?}: did you mean {:?}{hint}? (rename it, map it with --column {}, or keep it \
         as a plain column with --column {})",
        field.name(),
        ColumnMapping::flag(Some(field), name),
        ColumnMapping::flag(None, name)
    );
    Problem::new(line, "column-unknown", message).at_column(index, name)
}

/// What each column of one manifest means, decided once per column name
/// from the header (for JSONL, as each key is first seen) and the
/// `--column` mappings; `validate_row` reads it for every row.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    mappings: Vec<ColumnMapping>,
    fields: HashMap<String, Option<Field>>,
    /// The names learned in column order from the first (index 1) on,
    /// with their fields: a row's cells are found here by number, one
    /// string comparison each instead of a hash a cell.
    by_index: Vec<(String, Option<Field>)>,
}

impl Columns {
    pub fn new(context: &ValidationContext) -> Columns {
        Columns {
            mappings: context.columns.clone(),
            fields: HashMap::new(),
            by_index: Vec::new(),
        }
    }

    /// How many distinct column names were learned.
    pub fn n_learned(&self) -> usize {
        self.fields.len()
    }

    /// Learns the columns not seen before (each with its 1-based number),
    /// found on `line`, and returns a `column-unknown` problem for each new
    /// one that looks like a misspelled field.
    pub fn learn<'a>(
        &mut self,
        line: u64,
        names: impl IntoIterator<Item = (usize, &'a str)>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        let names: Vec<(usize, &str)> = names.into_iter().collect();
        // `id` wins over its aliases: with both `id` and `job_id` (a results
        // table fed back in), `job_id` is carried. Other fields named twice
        // stay a `column-duplicate` problem: their values could disagree.
        let exact: Vec<Field> = [Field::Id]
            .into_iter()
            .filter(|field| {
                let named = |name: &str| HeaderKey::of(name).base == field.name();
                names.iter().any(|(_, name)| named(name))
                    || self.fields.keys().any(|name| named(name))
            })
            .collect();
        for (index, name) in names.iter().copied() {
            if self.fields.contains_key(name) {
                continue;
            }
            let field = match meaning(name, &self.mappings) {
                Meaning::Field(field)
                    if HeaderKey::of(name).base != field.name()
                        && exact.contains(&field)
                        && !self.mapped(name) =>
                {
                    None
                }
                Meaning::Field(field) => Some(field),
                Meaning::Unknown(field) => {
                    problems.push(unknown_column(line, index, name, field));
                    None
                }
                Meaning::Carried => None,
            };
            self.fields.insert(name.to_owned(), field);
            if index == self.by_index.len() + 1 {
                self.by_index.push((name.to_owned(), field));
            }
        }
        problems
    }

    /// Whether `--column` names this header.
    fn mapped(&self, name: &str) -> bool {
        let key = HeaderKey::of(name);
        self.mappings.iter().any(|mapping| mapping.key == key)
    }

    /// A `column-mapping-unused` problem for each `--column` whose header
    /// no learned column matches (the field would silently get its default),
    /// placed on the header's line.
    pub fn unused_mappings(&self, header_line: u64) -> Vec<Problem> {
        self.mappings
            .iter()
            .filter(|mapping| {
                !self
                    .fields
                    .keys()
                    .any(|name| HeaderKey::of(name) == mapping.key)
            })
            .map(|mapping| {
                let flag = ColumnMapping::flag(mapping.field, &mapping.header);
                Problem::new(
                    header_line,
                    "column-mapping-unused",
                    format!(
                        "--column {flag}: the manifest has no column {:?}",
                        mapping.header
                    ),
                )
            })
            .collect()
    }

    /// Whether the column `name` holds the rows' ids.
    pub fn is_id(&self, name: &str) -> bool {
        self.field(name) == Some(Field::Id)
    }

    /// The field `cell` is sent as, if any (`field` of its name).
    fn cell_field(&self, cell: &Cell) -> Option<Field> {
        match self.by_index.get(cell.index.wrapping_sub(1)) {
            Some((name, field)) if *name == *cell.name => *field,
            _ => self.field(&cell.name),
        }
    }

    /// The field the column `name` is sent as, if any. A name not learned
    /// (a caller that skipped `learn`) is worked out on the spot.
    fn field(&self, name: &str) -> Option<Field> {
        match self.fields.get(name) {
            Some(field) => *field,
            None => match meaning(name, &self.mappings) {
                Meaning::Field(field) => Some(field),
                Meaning::Unknown(_) | Meaning::Carried => None,
            },
        }
    }
}

/// Collects the problems of one row as its cells are checked.
struct RowCheck<'a> {
    line: u64,
    problems: Vec<Problem>,
    /// `image_warning`'s warning, found while the image is checked.
    warning: Option<Problem>,
    cells: Vec<(Field, &'a Cell)>,
}

impl<'a> RowCheck<'a> {
    fn problem(&mut self, cell: &Cell, rule: &'static str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(self.line, rule, message).at_column(cell.index, &cell.name));
    }

    fn new(row: &'a RawRow, columns: &Columns) -> RowCheck<'a> {
        let mut check = RowCheck {
            line: row.line,
            problems: Vec::new(),
            warning: None,
            cells: Vec::new(),
        };
        for cell in &row.cells {
            let Some(field) = columns.cell_field(cell) else {
                continue;
            };
            if let Some((_, first)) = check.cells.iter().find(|(seen, _)| *seen == field) {
                let message = format!("this column means the same as {:?}; keep one", first.name);
                check.problem(cell, "column-duplicate", message);
            } else {
                check.cells.push((field, cell));
            }
        }
        check
    }

    /// The cell for `field`, unless it is absent or blank.
    fn cell(&self, field: Field) -> Option<&'a Cell> {
        self.cells
            .iter()
            .find(|(seen, _)| *seen == field)
            .map(|(_, cell)| *cell)
            .filter(|cell| !is_blank(&cell.value))
    }

    fn text(&mut self, field: Field, rule: &'static str) -> Option<String> {
        let cell = self.cell(field)?;
        match &cell.value {
            Value::String(text) => Some(text.trim().to_owned()),
            Value::Number(number) => Some(number.to_string()),
            other => {
                self.problem(cell, rule, format!("must be text, got {other}"));
                None
            }
        }
    }

    fn integer(&mut self, field: Field, rule: &'static str, what: &str) -> Option<i64> {
        let cell = self.cell(field)?;
        let parsed = match &cell.value {
            Value::Number(number) => number
                .as_i64()
                .or_else(|| number.as_f64().and_then(whole_number)),
            Value::String(text) => parse_integer(text),
            _ => None,
        };
        if parsed.is_none() {
            self.problem(
                cell,
                rule,
                format!("{what} must be a whole number, got {}", shown(&cell.value)),
            );
        }
        parsed
    }

    fn number(&mut self, field: Field, rule: &'static str, what: &str) -> Option<f64> {
        let cell = self.cell(field)?;
        let parsed = match &cell.value {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        };
        if parsed.is_none() {
            self.problem(
                cell,
                rule,
                format!("{what} must be a number, got {}", shown(&cell.value)),
            );
        }
        parsed
    }

    fn boolean(&mut self, field: Field, rule: &'static str) -> Option<bool> {
        let cell = self.cell(field)?;
        let parsed = match &cell.value {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) => match number.as_f64() {
                Some(1.0) => Some(true),
                Some(0.0) => Some(false),
                _ => None,
            },
            Value::String(text) => parse_bool(text),
            _ => None,
        };
        if parsed.is_none() {
            self.problem(
                cell,
                rule,
                format!(
                    "must be true/false, yes/no or 1/0, got {}",
                    shown(&cell.value)
                ),
            );
        }
        parsed
    }
}

fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        _ => false,
    }
}

/// A value as the user wrote it, shortened for messages.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        let head: String = text.chars().take(57).collect();
        format!("{head}...")
    } else {
        text
    }
}

fn whole_number(number: f64) -> Option<i64> {
    (number.is_finite() && number.fract() == 0.0 && number.abs() < 9.0e15).then_some(number as i64)
}

/// Integers as spreadsheets write them: `5`, ` 5 `, `5.0`, `+5`.
pub fn parse_integer(text: &str) -> Option<i64> {
    let text = text.trim();
    text.parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().and_then(whole_number))
}

/// Booleans in any case: true/false, yes/no, 1/0.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "1.0" => Some(true),
        "false" | "no" | "0" | "0.0" => Some(false),
        _ => None,
    }
}

/// Checks one row against every rule and returns the job it describes, or
/// every problem found in it. `columns` says which cell is which field
/// (header problems are `Columns::learn`'s, reported once, not per row).
pub fn validate_row(
    row: &RawRow,
    columns: &Columns,
    context: &ValidationContext,
) -> Result<JobSpec, Vec<Problem>> {
    let (explicit_id, request) = check_row(row, columns, context)?;
    Ok(job_spec(row, explicit_id, request))
}

/// A checked row: its own id, if it has one, and its request; or every
/// problem found in it.
pub type CheckedRow = Result<(Option<String>, VideoRequest), Vec<Problem>>;

/// `validate_row` without the `JobSpec`: the row's own id, if it has one,
/// and its request. `validate` needs no more, and copying every cell into
/// the spec's input shows at a million rows.
pub fn check_row(row: &RawRow, columns: &Columns, context: &ValidationContext) -> CheckedRow {
    check_row_warning(row, columns, context).0
}

/// `check_row`, and the row's `image_warning` (found while its image URL
/// is parsed, which `validate` would otherwise do twice a row).
pub fn check_row_warning(
    row: &RawRow,
    columns: &Columns,
    context: &ValidationContext,
) -> (CheckedRow, Option<Problem>) {
    let mut check = RowCheck::new(row, columns);
    // The fields are checked in this order so problems list in it.
    let explicit_id = check.text(Field::Id, "id-text");
    let image = check.image(context);
    let prompt = check.prompt();
    let negative_prompt = check.negative_prompt();
    let duration = check.duration();
    let cfg_scale = check.cfg_scale();
    let resolution = check.resolution();
    let seed = check.integer(Field::Seed, "seed-type", "seed");
    let thinking_type = check.text(Field::ThinkingType, "thinking-type-text");
    let generate_audio_switch = check.boolean(Field::GenerateAudio, "generate-audio-type");

    if !check.problems.is_empty() {
        return (Err(check.problems), check.warning);
    }
    let (Some(image), Some(prompt)) = (image, prompt) else {
        unreachable!("a missing image or prompt is always a problem")
    };
    let request = VideoRequest {
        image,
        prompt,
        duration: duration.map_or(DEFAULT_DURATION, |d| d as u32),
        cfg_scale,
        resolution: resolution.unwrap_or_else(|| DEFAULT_RESOLUTION.to_owned()),
        seed,
        thinking_type: thinking_type.unwrap_or_else(|| DEFAULT_THINKING_TYPE.to_owned()),
        negative_prompt,
        generate_audio_switch: generate_audio_switch.unwrap_or(false),
    };
    (Ok((explicit_id, request)), check.warning)
}

/// The identity of a valid row: its `id` cell, or else a hash of the
/// request.
pub fn row_job_id(explicit_id: Option<&str>, request: &VideoRequest) -> JobId {
    match explicit_id {
        Some(id) => JobId(id.to_owned()),
        None => hashed_job_id(request),
    }
}

/// The job a valid row describes (see `row_job_id`).
fn job_spec(row: &RawRow, explicit_id: Option<String>, request: VideoRequest) -> JobSpec {
    let job_id = row_job_id(explicit_id.as_deref(), &request);
    JobSpec {
        job_id,
        explicit_id: explicit_id.is_some(),
        line: row.line,
        request,
        input: row.input_map(),
    }
}

/// The API's rules, one field at a time. Each returns the field's value
/// when it is present and valid, and records a problem when it is not.
impl RowCheck<'_> {
    fn image(&mut self, context: &ValidationContext) -> Option<String> {
        let Some(cell) = self.cell(Field::Image) else {
            self.problems.push(Problem::new(
                self.line,
                "image-required",
                "the image column is required (an http(s) URL of a .jpg/.jpeg/.png file)",
            ));
            return None;
        };
        let result = match &cell.value {
            Value::String(text) => resolve_image(text.trim(), context),
            other => Err(("image-text", format!("must be a URL or path, got {other}"))),
        };
        match result {
            Ok(Image::Remote(url)) => {
                self.warning = extension_warning(self.line, cell, &url);
                Some(url.into())
            }
            Ok(Image::Hosted(url)) => Some(url),
            Err((rule, message)) => {
                self.problem(cell, rule, message);
                None
            }
        }
    }

    fn prompt(&mut self) -> Option<String> {
        let prompt = self.text(Field::Prompt, "prompt-text");
        if prompt.is_none() && self.cell(Field::Prompt).is_none() {
            self.problems.push(Problem::new(
                self.line,
                "prompt-required",
                "the prompt column is required and must not be empty",
            ));
        }
        if let Some(prompt) = &prompt {
            self.length(Field::Prompt, prompt, "prompt-length");
        }
        prompt
    }

    fn negative_prompt(&mut self) -> Option<String> {
        let negative = self.text(Field::NegativePrompt, "negative-prompt-text");
        if let Some(negative) = &negative {
            self.length(Field::NegativePrompt, negative, "negative-prompt-length");
        }
        negative
    }

    fn length(&mut self, field: Field, text: &str, rule: &'static str) {
        let n_chars = text.chars().count();
        if n_chars > MAX_PROMPT_CHARS {
            let cell = self.cell(field).expect("checked text has a cell");
            self.problem(
                cell,
                rule,
                format!("must be at most {MAX_PROMPT_CHARS} characters, has {n_chars}"),
            );
        }
    }

    fn duration(&mut self) -> Option<i64> {
        let duration = self.integer(Field::Duration, "duration-type", "duration");
        if let Some(duration) = duration
            && !DURATION_RANGE.contains(&duration)
        {
            let cell = self
                .cell(Field::Duration)
                .expect("a parsed duration has a cell");
            self.problem(
                cell,
                "duration-range",
                format!("duration must be 1 to 15 seconds, got {duration}"),
            );
        }
        duration
    }

    fn cfg_scale(&mut self) -> Option<f64> {
        let cfg_scale = self.number(Field::CfgScale, "cfg-scale-type", "cfg_scale");
        if let Some(cfg_scale) = cfg_scale
            && !(0.0..=1.0).contains(&cfg_scale)
        {
            let cell = self
                .cell(Field::CfgScale)
                .expect("a parsed cfg_scale has a cell");
            self.problem(
                cell,
                "cfg-scale-range",
                format!("cfg_scale must be from 0 to 1, got {cfg_scale}"),
            );
        }
        cfg_scale
    }

    fn resolution(&mut self) -> Option<String> {
        let resolution = self
            .text(Field::Resolution, "resolution-value")
            .map(|text| text.to_ascii_lowercase());
        if let Some(resolution) = &resolution
            && !RESOLUTIONS.contains(&resolution.as_str())
        {
            let cell = self
                .cell(Field::Resolution)
                .expect("a parsed resolution has a cell");
            self.problem(
                cell,
                "resolution-value",
                format!(
                    "resolution must be one of {}, got {resolution:?}",
                    RESOLUTIONS.join(", ")
                ),
            );
        }
        resolution
    }
}

/// A broken rule: its name and a message.
pub type RuleError = (&'static str, String);

/// What an `image` cell is sent as.
enum Image {
    /// Its own URL (that passed the URL rules).
    Remote(Url),
    /// A local file's URL under `--image-base-url` (that passed the image
    /// rules).
    Hosted(String),
}

/// The URL to send for an `image` cell: the URL itself, or a local file's
/// path under `--image-base-url` after the file passed the image rules.
fn resolve_image(text: &str, context: &ValidationContext) -> Result<Image, RuleError> {
    match Url::parse(text) {
        // A one-letter "scheme" is a Windows drive letter: a local path.
        Ok(url) if url.scheme().len() > 1 => check_image_url(&url).map(|()| Image::Remote(url)),
        _ => {
            let Some(base) = &context.image_base_url else {
                return Err((
                    "image-local-needs-base-url",
                    format!(
                        "{text:?} is not an http(s) URL; to send local files, host their folder and pass \
                         --image-base-url URL (the path is appended to it)"
                    ),
                ));
            };
            let relative = local_image_path(text)?;
            check_image_extension(&relative.to_string_lossy())?;
            check_image_info(&context.probe.probe(&context.manifest_dir.join(&relative))?)?;
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| {
                    (
                        "image-base-url",
                        "--image-base-url cannot take a path".to_owned(),
                    )
                })?
                .pop_if_empty()
                .extend(
                    relative
                        .components()
                        .map(|part| part.as_os_str().to_string_lossy()),
                );
            Ok(Image::Hosted(url.to_string()))
        }
    }
}

fn check_image_url(url: &Url) -> Result<(), RuleError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            "image-scheme",
            format!(
                "image URLs must start with http:// or https://, not {}:",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(("image-scheme", "the image URL has no host".to_owned()));
    }
    // A URL's format is judged by its bytes (when images are checked) or
    // by the provider; only an extension naming another format is refused
    // here (and a missing one is `image_warning`'s).
    if let Some(ext) = url_extension(url)
        && OTHER_IMAGE_EXTENSIONS.contains(&ext.as_str())
    {
        return Err((
            "image-extension",
            format!("the image must be a PNG or JPEG (.jpg, .jpeg or .png), not .{ext}"),
        ));
    }
    Ok(())
}

/// The lower-case extension of a URL path's last segment, if it has one.
fn url_extension(url: &Url) -> Option<String> {
    let name = url.path().rsplit('/').next().unwrap_or("");
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| !ext.is_empty())
}

/// A row's id, prompt and image cells as written, found by field name,
/// alias or `--column` mapping (for an invalid row's card in the gallery).
pub fn key_cells(row: &RawRow, columns: &Columns) -> KeyCells {
    let text = |field: Field| {
        let cell = row
            .cells
            .iter()
            .find(|cell| columns.cell_field(cell) == Some(field))?;
        let text = match &cell.value {
            Value::String(text) => text.trim().to_owned(),
            Value::Null => return None,
            other => other.to_string(),
        };
        (!text.is_empty()).then_some(text)
    };
    KeyCells {
        id: text(Field::Id),
        prompt: text(Field::Prompt),
        image: text(Field::Image),
    }
}

/// A row's image cell and its URL, when the cell holds an http(s) URL that
/// passes the URL rules: the images `check_images` fetches, keyed by the
/// URL exactly as it is sent (local files under `--image-base-url` are
/// read from disk instead).
pub fn remote_image<'r>(row: &'r RawRow, columns: &Columns) -> Option<(&'r Cell, String)> {
    remote_image_url(row, columns).map(|(cell, url)| (cell, url.to_string()))
}

/// `remote_image`, with the URL parsed (once: this runs for every row).
fn remote_image_url<'r>(row: &'r RawRow, columns: &Columns) -> Option<(&'r Cell, Url)> {
    let cell = row
        .cells
        .iter()
        .find(|cell| columns.cell_field(cell) == Some(Field::Image))?;
    let text = cell.value.as_str()?.trim();
    match Url::parse(text) {
        Ok(url) if url.scheme().len() > 1 => check_image_url(&url).ok().map(|()| (cell, url)),
        _ => None,
    }
}

/// The warning for a remote image whose URL does not say it is a PNG or
/// JPEG, when images are not checked: it is sent as it is, and only the
/// provider will judge it.
pub fn image_warning(row: &RawRow, columns: &Columns) -> Option<Problem> {
    let (cell, url) = remote_image_url(row, columns)?;
    extension_warning(row.line, cell, &url)
}

/// `image_warning` for the remote image `url` of `cell`, on `line`.
fn extension_warning(line: u64, cell: &Cell, url: &Url) -> Option<Problem> {
    let ext = url_extension(url);
    if ext.is_some_and(|ext| IMAGE_EXTENSIONS.contains(&ext.as_str())) {
        return None;
    }
    let message = "the image URL does not end in .jpg, .jpeg or .png and images were not checked: \
                   nothing says it is a PNG or JPEG (--check-images checks its bytes)";
    Some(Problem::new(line, "image-extension-missing", message).at_column(cell.index, &cell.name))
}

/// The problem with a remote image, from what checking it found: the
/// same rules as for local files (`image-size`, `image-dimensions`,
/// `image-aspect-ratio`), or why it could not be read.
pub fn remote_image_problem(row: &RawRow, cell: &Cell, image: &RemoteImage) -> Option<Problem> {
    let (rule, message) = remote_image_refusal(image)?;
    Some(Problem::new(row.line, rule, message).at_column(cell.index, &cell.name))
}

/// Why a checked remote image would be refused, if it would.
pub fn remote_image_refusal(image: &RemoteImage) -> Option<RuleError> {
    match image {
        RemoteImage::Unreadable { rule, message } => Some((rule, message.clone())),
        RemoteImage::Read {
            format,
            bytes,
            width,
            height,
        } => check_image_info(&ImageInfo {
            format,
            // An unknown length cannot break the size rule; the provider
            // judges it.
            bytes: bytes.unwrap_or(0),
            width: *width,
            height: *height,
        })
        .err(),
    }
}

fn check_image_extension(path: &str) -> Result<(), RuleError> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match ext {
        Some(ext) if IMAGE_EXTENSIONS.contains(&ext.as_str()) => Ok(()),
        _ => Err((
            "image-extension",
            format!("the image must be a .jpg, .jpeg or .png file, got {name:?}"),
        )),
    }
}

/// A local image path, relative and inside the manifest's folder.
fn local_image_path(text: &str) -> Result<PathBuf, RuleError> {
    let normalized = text.replace('\\', "/");
    let path = Path::new(&normalized);
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err((
                    "image-path",
                    format!(
                        "local image paths must be relative and stay inside the manifest's folder \
                         (they are appended to --image-base-url), got {text:?}"
                    ),
                ));
            }
        }
    }
    if relative.as_os_str().is_empty() || text.contains(':') {
        return Err(("image-path", format!("{text:?} is not a usable image path")));
    }
    Ok(relative)
}

/// The API's rules for image files: at most 10 MB, both sides at least
/// 300 px, aspect ratio between 1:2.5 and 2.5:1 inclusive.
pub fn check_image_info(info: &ImageInfo) -> Result<(), RuleError> {
    if info.bytes > MAX_IMAGE_BYTES {
        return Err((
            "image-size",
            format!(
                "the image is {} bytes; the limit is 10 MB ({MAX_IMAGE_BYTES} bytes)",
                info.bytes
            ),
        ));
    }
    if info.width < MIN_IMAGE_SIDE || info.height < MIN_IMAGE_SIDE {
        return Err((
            "image-dimensions",
            format!(
                "the image is {}x{} px; width and height must be at least {MIN_IMAGE_SIDE} px",
                info.width, info.height
            ),
        ));
    }
    let (width, height) = (u64::from(info.width), u64::from(info.height));
    if 2 * width > 5 * height || 2 * height > 5 * width {
        return Err((
            "image-aspect-ratio",
            format!(
                "the image is {}x{} px; its aspect ratio must be between 1:2.5 and 2.5:1",
                info.width, info.height
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ProbeError;
    use serde_json::json;
    use std::collections::HashMap;

    /// Local images by full path, as a probe would report them; any other
    /// path is a missing file. No file is read.
    #[derive(Default)]
    struct FakeProbe(HashMap<PathBuf, Result<ImageInfo, ProbeError>>);

    impl FakeProbe {
        fn image(mut self, path: &str, bytes: u64, width: u32, height: u32) -> FakeProbe {
            let info = ImageInfo {
                format: "png",
                bytes,
                width,
                height,
            };
            self.0.insert(PathBuf::from(path), Ok(info));
            self
        }

        fn refusal(mut self, path: &str, rule: &'static str) -> FakeProbe {
            let refusal = (rule, format!("{path} refused"));
            self.0.insert(PathBuf::from(path), Err(refusal));
            self
        }
    }

    impl ImageProbe for FakeProbe {
        fn probe(&self, path: &Path) -> Result<ImageInfo, ProbeError> {
            self.0
                .get(path)
                .cloned()
                .unwrap_or_else(|| Err(("image-file", format!("no file {}", path.display()))))
        }
    }

    fn context() -> ValidationContext {
        ValidationContext::new(PathBuf::from("."), None).with_probe(Arc::new(FakeProbe::default()))
    }

    /// A context whose local images live under `/sheets` and are sent
    /// under `https://cdn.example.com/batch/`.
    fn local_context(probe: FakeProbe) -> ValidationContext {
        let base = Url::parse("https://cdn.example.com/batch/").unwrap();
        ValidationContext::new(PathBuf::from("/sheets"), Some(base)).with_probe(Arc::new(probe))
    }

    fn local_image(context: &ValidationContext, path: &str) -> Result<JobSpec, Vec<Problem>> {
        validate(
            &row(&[("image", json!(path)), ("prompt", json!("p"))]),
            context,
        )
    }

    /// `validate_row` with the row's own names as the header; header
    /// problems come first.
    fn validate(row: &RawRow, context: &ValidationContext) -> Result<JobSpec, Vec<Problem>> {
        let mut columns = Columns::new(context);
        let mut problems = columns.learn(1, numbered(row));
        match validate_row(row, &columns, context) {
            Ok(spec) if problems.is_empty() => Ok(spec),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }

    fn numbered(row: &RawRow) -> impl Iterator<Item = (usize, &str)> {
        row.cells.iter().map(|cell| (cell.index, &*cell.name))
    }

    fn row(cells: &[(&str, Value)]) -> RawRow {
        RawRow {
            line: 7,
            cells: cells
                .iter()
                .enumerate()
                .map(|(idx, (name, value))| Cell {
                    index: idx + 1,
                    name: (*name).into(),
                    value: value.clone(),
                })
                .collect(),
        }
    }

    fn with(extra: &[(&str, Value)]) -> RawRow {
        let mut cells = vec![
            ("image", json!("https://cdn.example.com/cat.png")),
            ("prompt", json!("a cat")),
        ];
        cells.extend(extra.iter().cloned());
        row(&cells)
    }

    fn rules(result: Result<JobSpec, Vec<Problem>>) -> Vec<&'static str> {
        match result {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|problem| problem.rule).collect(),
        }
    }

    fn check(extra: &[(&str, Value)]) -> Vec<&'static str> {
        rules(validate(&with(extra), &context()))
    }

    #[test]
    fn a_minimal_row_gets_the_defaults() {
        let spec = validate(&with(&[]), &context()).unwrap();
        assert_eq!(spec.request.duration, 5);
        assert_eq!(spec.request.resolution, "720p");
        assert_eq!(spec.request.thinking_type, "auto");
        assert!(!spec.request.generate_audio_switch);
        assert!(!spec.explicit_id);
        assert!(spec.job_id.0.starts_with("h-"));
        assert_eq!(spec.line, 7);
    }

    #[test]
    fn prompt_length_counts_characters_not_bytes() {
        let prompt = |text: String| {
            rules(validate(
                &row(&[
                    ("image", json!("https://x.io/a.png")),
                    ("prompt", json!(text)),
                ]),
                &context(),
            ))
        };
        let at_limit = "é".repeat(2500);
        assert!(at_limit.len() > 2500);
        assert_eq!(prompt(at_limit), Vec::<&str>::new());
        assert_eq!(prompt("é".repeat(2501)), ["prompt-length"]);
        assert_eq!(
            check(&[("negative_prompt", json!("🎬".repeat(2500)))]),
            Vec::<&str>::new()
        );
        assert_eq!(
            check(&[("negative_prompt", json!("🎬".repeat(2501)))]),
            ["negative-prompt-length"]
        );
    }

    #[test]
    fn prompt_is_required() {
        let result = validate(
            &row(&[
                ("image", json!("https://x.io/a.png")),
                ("prompt", json!("  ")),
            ]),
            &context(),
        );
        assert_eq!(rules(result), ["prompt-required"]);
        let result = validate(&row(&[("image", json!("https://x.io/a.png"))]), &context());
        assert_eq!(rules(result), ["prompt-required"]);
    }

    #[test]
    fn duration_boundaries() {
        assert_eq!(check(&[("duration", json!("0"))]), ["duration-range"]);
        assert_eq!(check(&[("duration", json!("1"))]), Vec::<&str>::new());
        assert_eq!(check(&[("duration", json!("15"))]), Vec::<&str>::new());
        assert_eq!(check(&[("duration", json!("16"))]), ["duration-range"]);
        assert_eq!(check(&[("duration", json!(16))]), ["duration-range"]);
        assert_eq!(check(&[("duration", json!("-1"))]), ["duration-range"]);
        assert_eq!(check(&[("duration", json!("5.5"))]), ["duration-type"]);
        assert_eq!(check(&[("duration", json!("five"))]), ["duration-type"]);
        assert_eq!(check(&[("duration", json!(true))]), ["duration-type"]);
    }

    #[test]
    fn integers_accept_spreadsheet_spellings() {
        for text in ["5", " 5 ", "5.0", "+5", "5.000"] {
            let spec = validate(&with(&[("duration", json!(text))]), &context()).unwrap();
            assert_eq!(spec.request.duration, 5, "{text:?}");
        }
        let spec = validate(&with(&[("duration", json!(5.0))]), &context()).unwrap();
        assert_eq!(spec.request.duration, 5);
        let spec = validate(&with(&[("seed", json!("42.0"))]), &context()).unwrap();
        assert_eq!(spec.request.seed, Some(42));
        assert_eq!(check(&[("seed", json!("4.2"))]), ["seed-type"]);
    }

    #[test]
    fn cfg_scale_boundaries() {
        assert_eq!(check(&[("cfg_scale", json!("0"))]), Vec::<&str>::new());
        assert_eq!(check(&[("cfg_scale", json!("1"))]), Vec::<&str>::new());
        assert_eq!(check(&[("cfg_scale", json!(0.5))]), Vec::<&str>::new());
        assert_eq!(check(&[("cfg_scale", json!("1.01"))]), ["cfg-scale-range"]);
        assert_eq!(check(&[("cfg_scale", json!("-0.01"))]), ["cfg-scale-range"]);
        assert_eq!(check(&[("cfg_scale", json!("NaN"))]), ["cfg-scale-type"]);
        assert_eq!(check(&[("cfg_scale", json!("high"))]), ["cfg-scale-type"]);
    }

    #[test]
    fn each_resolution() {
        for resolution in ["360p", "540p", "720p", "1080p", "1080P", " 540p "] {
            let spec = validate(&with(&[("resolution", json!(resolution))]), &context()).unwrap();
            assert_eq!(
                spec.request.resolution,
                resolution.trim().to_ascii_lowercase()
            );
        }
        for resolution in ["480p", "4k", "720", "1080pp"] {
            assert_eq!(
                check(&[("resolution", json!(resolution))]),
                ["resolution-value"],
                "{resolution}"
            );
        }
    }

    #[test]
    fn booleans_in_any_spelling() {
        for (text, expected) in [
            ("true", true),
            ("TRUE", true),
            ("Yes", true),
            ("1", true),
            ("false", false),
            ("No", false),
            ("0", false),
            ("FALSE", false),
        ] {
            let spec = validate(&with(&[("generate_audio", json!(text))]), &context()).unwrap();
            assert_eq!(spec.request.generate_audio_switch, expected, "{text}");
        }
        let spec = validate(&with(&[("generate_audio_switch", json!(true))]), &context()).unwrap();
        assert!(spec.request.generate_audio_switch);
        assert_eq!(
            check(&[("generate_audio", json!("maybe"))]),
            ["generate-audio-type"]
        );
        assert_eq!(
            check(&[
                ("generate_audio", json!("yes")),
                ("generate_audio_switch", json!("yes"))
            ]),
            ["column-duplicate"]
        );
    }

    #[test]
    fn image_urls_need_http_and_no_other_formats_extension() {
        for good in [
            "https://cdn.example.com/a.png",
            "http://cdn.example.com/a.JPG",
            "https://cdn.example.com/dir/a.jpeg?sig=abc",
            // No extension: judged by its bytes, or sent with a warning.
            "https://images.example.com/photo-123?w=800&fm=png",
            "https://cdn.example.com/",
            "https://cdn.example.com/png",
            "https://cdn.example.com/render.php?id=4",
            "https://cdn.example.com/v1.2/photo",
        ] {
            let result = validate(
                &row(&[("image", json!(good)), ("prompt", json!("p"))]),
                &context(),
            );
            assert!(result.is_ok(), "{good}: {result:?}");
        }
        for (bad, rule) in [
            ("ftp://cdn.example.com/a.png", "image-scheme"),
            ("file:///tmp/a.png", "image-scheme"),
            ("data:image/png;base64,AAAA", "image-scheme"),
            ("https://cdn.example.com/a.gif", "image-extension"),
            ("https://cdn.example.com/a.WEBP?fm=png", "image-extension"),
            ("https://cdn.example.com/a.heic", "image-extension"),
            ("images/a.png", "image-local-needs-base-url"),
        ] {
            let result = validate(
                &row(&[("image", json!(bad)), ("prompt", json!("p"))]),
                &context(),
            );
            assert_eq!(rules(result), [rule], "{bad}");
        }
    }

    #[test]
    fn a_url_without_an_image_extension_is_a_warning_when_not_checked() {
        let warning = |image: &str| {
            let row = row(&[("prompt", json!("p")), ("image", json!(image))]);
            let mut columns = Columns::new(&context());
            columns.learn(1, numbered(&row));
            image_warning(&row, &columns)
        };
        let problem = warning("https://images.example.com/photo-123?w=800&fm=png").unwrap();
        assert_eq!(problem.rule, "image-extension-missing");
        assert_eq!(problem.location.column, Some((2, "image".to_owned())));
        assert!(warning("https://x.io/a.png?sig=1").is_none());
        assert!(warning("https://x.io/a.JPEG").is_none());
        assert!(
            warning("https://x.io/a.gif").is_none(),
            "an error, not a warning"
        );
        assert!(warning("local/a.png").is_none(), "local files are read");
    }

    #[test]
    fn a_checked_remote_image_meets_the_rules_for_files() {
        let read = |bytes, width, height| RemoteImage::Read {
            format: "jpeg",
            bytes,
            width,
            height,
        };
        let rule = |image: RemoteImage| remote_image_refusal(&image).map(|(rule, _)| rule);
        assert_eq!(rule(read(Some(1000), 600, 400)), None);
        assert_eq!(rule(read(None, 600, 400)), None, "unknown length");
        assert_eq!(
            rule(read(Some(MAX_IMAGE_BYTES + 1), 600, 400)),
            Some("image-size")
        );
        assert_eq!(rule(read(Some(1000), 299, 400)), Some("image-dimensions"));
        assert_eq!(
            rule(read(Some(1000), 1001, 400)),
            Some("image-aspect-ratio")
        );
        let missing = RemoteImage::Unreadable {
            rule: "image-unreachable",
            message: "HTTP 404".to_owned(),
        };
        assert_eq!(rule(missing), Some("image-unreachable"));
    }

    #[test]
    fn every_problem_of_a_row_is_reported_with_its_column() {
        let bad = row(&[
            ("image", json!("ftp://x/a.png")),
            ("prompt", json!("p")),
            ("duration", json!("99")),
            ("resolution", json!("8k")),
            ("cfg_scale", json!("2")),
        ]);
        let problems = validate(&bad, &context()).unwrap_err();
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.rule, p.location.column.as_ref().map(|(idx, _)| *idx)))
            .collect();
        assert_eq!(
            found,
            [
                ("image-scheme", Some(1)),
                ("duration-range", Some(3)),
                ("cfg-scale-range", Some(5)),
                ("resolution-value", Some(4)),
            ]
        );
        assert!(problems.iter().all(|p| p.location.line == 7));
    }

    #[test]
    fn an_explicit_id_is_the_identity_and_unknown_columns_are_kept() {
        let spec = validate(
            &with(&[("ID", json!(" clip-1 ")), ("notes", json!("x"))]),
            &context(),
        )
        .unwrap();
        assert_eq!(spec.job_id.0, "clip-1");
        assert!(spec.explicit_id);
        assert_eq!(spec.input["notes"], json!("x"));
        assert!(!spec.request.to_json().contains("notes"));
    }

    fn meaning_of(name: &str) -> Meaning {
        meaning(name, &[])
    }

    /// Header problems of a manifest whose header is `names`.
    fn header_problems(names: &[&str], mappings: &[&str]) -> Vec<Problem> {
        let texts: Vec<String> = mappings.iter().map(|text| (*text).to_owned()).collect();
        let context = context().with_columns(ColumnMapping::parse_all(&texts).unwrap());
        let mut columns = Columns::new(&context);
        let mut problems = columns.learn(1, names.iter().enumerate().map(|(i, n)| (i + 1, *n)));
        problems.extend(columns.unused_mappings(1));
        problems
    }

    #[test]
    fn a_look_alike_column_can_be_kept_and_a_field_name_wins_over_its_alias() {
        let rules = |names: &[&str], mappings: &[&str]| -> Vec<&'static str> {
            header_problems(names, mappings)
                .into_iter()
                .map(|problem| problem.rule)
                .collect()
        };
        assert_eq!(
            rules(&["image", "prompt", "speed"], &[]),
            ["column-unknown"]
        );
        let problem = &header_problems(&["image", "prompt", "speed"], &[])[0];
        assert!(
            problem.message.contains("--column -=speed"),
            "{}",
            problem.message
        );
        assert!(rules(&["image", "prompt", "speed"], &["-=speed"]).is_empty());
        // A results table fed back in has both `id` and `job_id`.
        assert!(rules(&["id", "image", "prompt", "job_id"], &[]).is_empty());
        let context = context();
        let mut columns = Columns::new(&context);
        columns.learn(1, [(1, "id"), (2, "job_id")]);
        assert_eq!(columns.field("id"), Some(Field::Id));
        assert_eq!(columns.field("job_id"), None, "carried, not a second id");
    }

    #[test]
    fn spreadsheet_spellings_map_to_their_field() {
        for (header, field) in [
            ("Image URL", Field::Image),
            ("image_url", Field::Image),
            ("Image Link", Field::Image),
            ("image-path", Field::Image),
            ("Prompt", Field::Prompt),
            ("Negative prompt", Field::NegativePrompt),
            ("negative-prompt", Field::NegativePrompt),
            (" NEGATIVE__PROMPT ", Field::NegativePrompt),
            ("Duration (s)", Field::Duration),
            ("Duration (seconds)", Field::Duration),
            ("duration(sec)", Field::Duration),
            ("Audio", Field::GenerateAudio),
            ("Generate audio", Field::GenerateAudio),
            ("generate_audio_switch", Field::GenerateAudio),
            ("CFG scale", Field::CfgScale),
            ("cfg", Field::CfgScale),
            ("CFG scale (0-1)", Field::CfgScale),
            ("Thinking type", Field::ThinkingType),
            ("ID", Field::Id),
            ("Job ID", Field::Id),
            ("Resolution", Field::Resolution),
            ("seed", Field::Seed),
        ] {
            assert_eq!(meaning_of(header), Meaning::Field(field), "{header:?}");
        }
        let spec = validate(
            &row(&[
                ("Job ID", json!("shot-1")),
                ("Image URL", json!("https://x.io/a.png")),
                ("Prompt", json!("p")),
                ("Duration (s)", json!("7")),
                ("Audio", json!("yes")),
                ("CFG scale", json!("0.25")),
            ]),
            &context(),
        )
        .unwrap();
        assert_eq!(spec.job_id.0, "shot-1");
        assert_eq!(spec.request.duration, 7);
        assert!(spec.request.generate_audio_switch);
        assert_eq!(spec.request.cfg_scale, Some(0.25));
        assert_eq!(
            check(&[("Image link", json!("https://x.io/b.png"))]),
            ["column-duplicate"]
        );
    }

    #[test]
    fn misspelled_fields_are_one_header_problem_each() {
        let problems = header_problems(&["id", "image", "prompt", "durration"], &[]);
        assert_eq!(problems.len(), 1);
        let problem = &problems[0];
        assert_eq!((problem.location.line, problem.rule), (1, "column-unknown"));
        assert_eq!(problem.location.column, Some((4, "durration".to_owned())));
        assert_eq!(
            problem.message,
            "unknown column \"durration\": did you mean \"duration\"? \
             (rename it, map it with --column duration=durration, or keep it as a plain column with \
             --column -=durration)"
        );
        let message = &header_problems(&["Duration (ms)"], &[])[0].message;
        assert_eq!(
            message,
            "unknown column \"Duration (ms)\": did you mean \"duration\" (in seconds, not ms)? \
             (rename it, map it with --column 'duration=Duration (ms)', or keep it as a plain column with \
             --column '-=Duration (ms)')"
        );
    }

    #[test]
    fn did_you_mean_stops_at_distance_two_and_at_short_names() {
        assert_eq!(edit_distance("durration", "duration"), 1);
        assert_eq!(
            edit_distance("resolutoin", "resolution"),
            1,
            "a swap is one"
        );
        assert_eq!(edit_distance("durati", "duration"), 2);
        assert_eq!(edit_distance("durat", "duration"), 3);
        for (header, field) in [
            ("durration", Field::Duration),
            ("Durration (s)", Field::Duration),
            ("resolutoin", Field::Resolution),
            ("durati", Field::Duration),
            ("Duration (ms)", Field::Duration),
            ("prompts", Field::Prompt),
            ("Imgae URL", Field::Image),
            ("negativeprompt", Field::NegativePrompt),
            ("seeds", Field::Seed),
            ("jobid", Field::Id),
        ] {
            assert_eq!(meaning_of(header), Meaning::Unknown(field), "{header:?}");
        }
        // Distance 3, two edits of a short name, names under 4 characters,
        // and columns that mean something else.
        for header in [
            "durat", "side", "page", "video", "sed", "idd", "ids", "idea", "notes", "scene",
            "client", "shot_no", "Owner", "title", "name", "(s)", "",
        ] {
            assert_eq!(meaning_of(header), Meaning::Carried, "{header:?}");
        }
    }

    #[test]
    fn column_flags_map_any_header_and_win() {
        assert!(header_problems(&["durration"], &["duration=durration"]).is_empty());
        assert!(header_problems(&["Length (s)"], &["DURATION= length (S) "]).is_empty());
        let mapped = |mapping: &str, cells: &[(&str, Value)]| {
            let mappings = vec![ColumnMapping::parse(mapping).unwrap()];
            validate(&row(cells), &context().with_columns(mappings))
        };
        let spec = mapped(
            "duration=durration",
            &[
                ("image", json!("https://x.io/a.png")),
                ("prompt", json!("p")),
                ("durration", json!("9")),
            ],
        )
        .unwrap();
        assert_eq!(spec.request.duration, 9);
        // An explicit mapping wins over an alias.
        let spec = mapped(
            "prompt=audio",
            &[
                ("image", json!("https://x.io/a.png")),
                ("audio", json!("hi")),
            ],
        )
        .unwrap();
        assert_eq!(
            (
                spec.request.prompt.as_str(),
                spec.request.generate_audio_switch
            ),
            ("hi", false)
        );
        let twice = mapped(
            "image=photo",
            &[
                ("image", json!("https://x.io/a.png")),
                ("prompt", json!("p")),
                ("photo", json!("https://x.io/b.png")),
            ],
        );
        assert_eq!(rules(twice), ["column-duplicate"]);
        let unused = header_problems(&["image", "prompt"], &["duration=Length"]);
        assert_eq!(unused.len(), 1);
        assert_eq!(unused[0].rule, "column-mapping-unused");
    }

    #[test]
    fn column_flags_name_an_api_field() {
        let error = ColumnMapping::parse("length=Duration").unwrap_err();
        assert!(error.contains("\"length\" is not an API field"), "{error}");
        assert!(
            error.contains("id, image, prompt, duration, cfg_scale, resolution, seed, thinking_type, negative_prompt, generate_audio_switch"),
            "{error}"
        );
        assert!(ColumnMapping::parse("duration").is_err());
        assert!(ColumnMapping::parse("duration= ").is_err());
        let twice = ["seed=Length".to_owned(), "duration=length".to_owned()];
        let error = ColumnMapping::parse_all(&twice).unwrap_err();
        assert!(error.contains("already mapped to seed"), "{error}");
    }

    #[test]
    fn image_rule_boundaries() {
        let info = |bytes, width, height| ImageInfo {
            format: "png",
            bytes,
            width,
            height,
        };
        let rule = |info: ImageInfo| check_image_info(&info).err().map(|(rule, _)| rule);
        assert_eq!(rule(info(MAX_IMAGE_BYTES, 300, 300)), None);
        assert_eq!(
            rule(info(MAX_IMAGE_BYTES + 1, 300, 300)),
            Some("image-size")
        );
        assert_eq!(rule(info(10, 299, 300)), Some("image-dimensions"));
        assert_eq!(rule(info(10, 300, 299)), Some("image-dimensions"));
        assert_eq!(rule(info(10, 750, 300)), None, "2.5:1 is allowed");
        assert_eq!(rule(info(10, 751, 300)), Some("image-aspect-ratio"));
        assert_eq!(rule(info(10, 300, 750)), None, "1:2.5 is allowed");
        assert_eq!(rule(info(10, 300, 751)), Some("image-aspect-ratio"));
    }

    #[test]
    fn local_images_are_checked_and_sent_under_the_base_url() {
        let context = local_context(
            FakeProbe::default()
                .image("/sheets/img/ok shot.png", 1000, 640, 360)
                .image("/sheets/img/small.png", 1000, 200, 360)
                .image("/sheets/img/wide.png", 1000, 1000, 300)
                .refusal("/sheets/img/fake.png", "image-format"),
        );
        let image = |path: &str| local_image(&context, path);
        let spec = image("img/ok shot.png").unwrap();
        assert_eq!(
            spec.request.image,
            "https://cdn.example.com/batch/img/ok%20shot.png"
        );
        assert_eq!(
            image("./img\\ok shot.png").unwrap().request.image,
            spec.request.image
        );
        assert_eq!(rules(image("img/small.png")), ["image-dimensions"]);
        assert_eq!(rules(image("img/wide.png")), ["image-aspect-ratio"]);
        assert_eq!(rules(image("img/fake.png")), ["image-format"]);
        assert_eq!(rules(image("img/missing.png")), ["image-file"]);
        assert_eq!(rules(image("img/ok.gif")), ["image-extension"]);
        assert_eq!(rules(image("../img/ok shot.png")), ["image-path"]);
        assert_eq!(rules(image("/etc/ok.png")), ["image-path"]);
    }

    #[test]
    fn local_image_rules_at_their_boundaries() {
        let ten_mb = 10 * 1024 * 1024;
        let context = local_context(
            FakeProbe::default()
                .image("/sheets/10mb.png", ten_mb, 300, 300)
                .image("/sheets/over-10mb.png", ten_mb + 1, 300, 300)
                .image("/sheets/300px.png", 10, 300, 300)
                .image("/sheets/narrow-299.png", 10, 299, 300)
                .image("/sheets/short-299.png", 10, 300, 299)
                .image("/sheets/wide-2.5.png", 10, 750, 300)
                .image("/sheets/wide-over.png", 10, 751, 300)
                .image("/sheets/tall-2.5.png", 10, 300, 750)
                .image("/sheets/tall-over.png", 10, 300, 751)
                .image("/sheets/huge-2.5.png", 10, 5000, 2000)
                .image("/sheets/huge-over.png", 10, 5001, 2000),
        );
        let rule = |path: &str| rules(local_image(&context, path));
        let none = Vec::<&str>::new();
        assert_eq!(rule("10mb.png"), none, "exactly 10 MB is allowed");
        assert_eq!(rule("over-10mb.png"), ["image-size"]);
        assert_eq!(rule("300px.png"), none, "300 px sides are allowed");
        assert_eq!(rule("narrow-299.png"), ["image-dimensions"]);
        assert_eq!(rule("short-299.png"), ["image-dimensions"]);
        assert_eq!(rule("wide-2.5.png"), none, "2.5:1 is allowed");
        assert_eq!(rule("wide-over.png"), ["image-aspect-ratio"]);
        assert_eq!(rule("tall-2.5.png"), none, "1:2.5 is allowed");
        assert_eq!(rule("tall-over.png"), ["image-aspect-ratio"]);
        assert_eq!(rule("huge-2.5.png"), none);
        assert_eq!(rule("huge-over.png"), ["image-aspect-ratio"]);
    }

    #[test]
    fn urls_are_not_probed() {
        // The fake knows no file: a probe would answer image-file.
        let context = local_context(FakeProbe::default());
        assert!(local_image(&context, "https://cdn.example.com/a.png").is_ok());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::image::ProbeError;
    use proptest::prelude::*;

    /// Every local path is a valid image, so rows get past the image rules.
    struct AnyImage;

    impl ImageProbe for AnyImage {
        fn probe(&self, _path: &Path) -> Result<ImageInfo, ProbeError> {
            Ok(ImageInfo {
                format: "png",
                bytes: 1000,
                width: 640,
                height: 360,
            })
        }
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            "[0-9 .eE+-]{0,8}".prop_map(Value::String),
            any::<f64>()
                .prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            Just(serde_json::json!([1, {"a": null}])),
        ]
    }

    fn any_column() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("image".to_owned()),
            Just("prompt".to_owned()),
            Just("duration".to_owned()),
            Just("cfg_scale".to_owned()),
            Just("resolution".to_owned()),
            Just("seed".to_owned()),
            Just("generate_audio".to_owned()),
            Just("id".to_owned()),
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn validation_never_panics(cells in proptest::collection::vec((any_column(), any_value()), 0..10)) {
            let row = RawRow {
                line: 2,
                cells: cells
                    .into_iter()
                    .enumerate()
                    .map(|(idx, (name, value))| Cell { index: idx + 1, name: name.into(), value })
                    .collect(),
            };
            let base = Url::parse("https://cdn.example.com/b/").unwrap();
            let context = ValidationContext::new(PathBuf::from("."), Some(base))
                .with_probe(Arc::new(AnyImage));
            let mut columns = Columns::new(&context);
            let _ = columns.learn(1, row.cells.iter().map(|cell| (cell.index, &*cell.name)));
            if let Ok(spec) = validate_row(&row, &columns, &context) {
                // Whatever passes satisfies the API's rules.
                prop_assert!(DURATION_RANGE.contains(&i64::from(spec.request.duration)));
                prop_assert!(spec.request.prompt.chars().count() <= MAX_PROMPT_CHARS);
                prop_assert!(RESOLUTIONS.contains(&spec.request.resolution.as_str()));
                prop_assert!(spec.request.cfg_scale.is_none_or(|c| (0.0..=1.0).contains(&c)));
            }
        }
    }
}
