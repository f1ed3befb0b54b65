//! Money: exact US-dollar amounts, the price table per second of video, cost
//! estimates and a plan's cost breakdown. Pure, except `PriceTable::from_file`.
//!
//! Amounts are whole micro-dollars (`u64`, 1 USD = 1 000 000), never floats,
//! so a million additions give an exact total and a spending cap is compared
//! exactly. Every price is a whole number of micro-dollars per second and
//! every duration a whole number of seconds, so a cost is exact too.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::validate::parse_bool;

/// Micro-dollars in one US dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// The date the built-in list prices were read.
pub const BUILTIN_PRICES_DATE: &str = "2026-11-26";

/// Where the built-in prices come from, for documentation and display.
pub const BUILTIN_PRICES_SOURCE: &str =
    "PixVerse V6 list prices per second of video (USD), read 2026-11-26";

/// The highest price per second a prices file may give: anything above is
/// surely a typo (or a price per video), and the bound keeps every cost of
/// a `u32` duration far inside a `u64`.
pub const MAX_USD_PER_SECOND: Usd = Usd::from_micros(1_000 * MICROS_PER_USD);

/// The four resolutions, smallest first, each with its built-in price per
/// second in micro-dollars, `[without audio, with audio]`.
const BUILTIN: [(&str, [u64; 2]); 4] = [
    ("360p", [25_000, 35_000]),
    ("540p", [35_000, 45_000]),
    ("720p", [45_000, 60_000]),
    ("1080p", [90_000, 115_000]),
];

/// The columns of a prices file, in the order the README shows them.
const PRICE_COLUMNS: [&str; 3] = ["resolution", "audio", "usd_per_second"];

/// An amount of US dollars, exact to the micro-dollar, never negative.
///
/// `+` and `Sum` saturate at `u64::MAX` micro-dollars (about 18.4 trillion
/// dollars): unreachable in practice, and a saturated total still exceeds
/// every cap. `checked_add` says when it would happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_micros(micros: u64) -> Usd {
        Usd(micros)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    /// The exact amount without the dollar sign, at least two decimals:
    /// `1.92`, `0.225`. For a command-line value (a `$` would be expanded by
    /// the shell) and for tables a spreadsheet sums.
    pub fn amount(self) -> String {
        let (dollars, micros) = (self.0 / MICROS_PER_USD, self.0 % MICROS_PER_USD);
        let decimals = format!("{micros:06}");
        let decimals = decimals.trim_end_matches('0');
        format!("{dollars}.{decimals:0<2}")
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }

    /// What is left of `self` after `other`, or zero.
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    pub fn checked_mul(self, factor: u64) -> Option<Usd> {
        self.0.checked_mul(factor).map(Usd)
    }

    /// Reads an amount a user typed (`--max-spend 12.50`): digits with an
    /// optional `.` and at most 6 decimals, an optional leading `$`, spaces
    /// around ignored. `1`, `1.00`, `$12.5`, `0.25` and `.5` are accepted;
    /// negatives, thousands separators, exponents and anything else are
    /// refused with a message that says why.
    pub fn parse(text: &str) -> Result<Usd, String> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix('$').unwrap_or(trimmed).trim_start();
        if trimmed.is_empty() {
            return Err("an amount is required, like 25 or 12.50".to_owned());
        }
        if trimmed.starts_with('-') || digits.starts_with('-') {
            return Err(format!("{text:?} is negative: an amount must be 0 or more"));
        }
        if digits.contains(',') {
            return Err(format!(
                "{text:?} has a comma: write the amount without thousands separators and with a dot for cents, like 1500 or 12.50"
            ));
        }
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction)
        {
            return Err(format!(
                "{text:?} is not an amount in US dollars: write it like 25, 12.50 or $0.25"
            ));
        }
        if fraction.len() > 6 {
            return Err(format!(
                "{text:?} has more than 6 decimals: amounts are counted in millionths of a dollar"
            ));
        }
        let too_large = || format!("{text:?} is too large");
        let whole: u64 = match whole {
            "" => 0,
            digits => digits.parse().map_err(|_| too_large())?,
        };
        // Pad the decimals to six digits: "5" is 500000 micro-dollars.
        let fraction: u64 = format!("{fraction:0<6}").parse().unwrap_or(0);
        whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|micros| micros.checked_add(fraction))
            .map(Usd)
            .ok_or_else(too_large)
    }
}

/// `$1.23`: dollars and cents, rounded half up (`$0.125` shows as `$0.13`).
/// An amount under one cent that is not zero shows every decimal it has
/// instead (`$0.0045`, `$0.000001`), so a tiny price never reads `$0.00`.
/// No thousands separators, so what is shown can be typed back to `parse`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0;
        let micros_per_cent = MICROS_PER_USD / 100;
        if micros != 0 && micros < micros_per_cent {
            let decimals = format!("{micros:06}");
            return write!(f, "$0.{}", decimals.trim_end_matches('0'));
        }
        let rounds_up = micros % micros_per_cent >= micros_per_cent / 2;
        let cents = micros / micros_per_cent + u64::from(rounds_up);
        write!(f, "${}.{:02}", cents / 100, cents % 100)
    }
}

impl FromStr for Usd {
    type Err = String;

    fn from_str(text: &str) -> Result<Usd, String> {
        Usd::parse(text)
    }
}

impl Add for Usd {
    type Output = Usd;

    fn add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, other: Usd) {
        *self = *self + other;
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(amounts: I) -> Usd {
        amounts.fold(Usd::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Usd> for Usd {
    fn sum<I: Iterator<Item = &'a Usd>>(amounts: I) -> Usd {
        amounts.copied().sum()
    }
}

/// Where a `PriceTable`'s prices came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSource {
    /// The built-in list prices.
    Builtin,
    /// A prices file that set `n_set` of the eight prices; the built-in
    /// list prices fill in the rest.
    File { path: PathBuf, n_set: usize },
}

/// `built-in list prices, 2026-11-26`, `prices.csv`, or
/// `prices.csv (built-in list prices, 2026-11-26, for the other 6)`.
impl fmt::Display for PriceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceSource::Builtin => write!(f, "built-in list prices, {BUILTIN_PRICES_DATE}"),
            PriceSource::File { path, n_set } => {
                write!(f, "{}", path.display())?;
                let n_builtin = 2 * BUILTIN.len() - n_set;
                if n_builtin > 0 {
                    write!(
                        f,
                        " (built-in list prices, {BUILTIN_PRICES_DATE}, for the other {n_builtin})"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The price of one second of video by resolution and audio setting.
///
/// The built-in prices are an estimate: the provider's list prices (see
/// `BUILTIN_PRICES_SOURCE`); what HighwayAPI charges may differ, which is
/// what a prices file is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    /// Indexed like `BUILTIN`, then `[without audio, with audio]`.
    per_second: [[Usd; 2]; 4],
    source: PriceSource,
}

impl PriceTable {
    /// The provider's list prices, read 2026-11-26 (USD per second, without
    /// / with audio): 360p 0.025 / 0.035, 540p 0.035 / 0.045, 720p 0.045 /
    /// 0.060, 1080p 0.090 / 0.115.
    pub fn builtin() -> PriceTable {
        PriceTable {
            per_second: BUILTIN.map(|(_, prices)| prices.map(Usd::from_micros)),
            source: PriceSource::Builtin,
        }
    }

    /// Reads a prices file (`--prices FILE`); see `from_csv` for the format.
    pub fn from_file(path: &Path) -> Result<PriceTable, PriceFileError> {
        let bytes = std::fs::read(path).map_err(|source| PriceFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        PriceTable::from_csv(&bytes, path)
    }

    /// Parses the text of a prices file; `path` only names it in messages.
    ///
    /// A CSV file with the header `resolution,audio,usd_per_second` (any
    /// column order and case) and one row per price: `resolution` is 360p,
    /// 540p, 720p or 1080p; `audio` is true/false, yes/no or 1/0; and
    /// `usd_per_second` is an amount like `0.045` (above 0, at most 1000,
    /// at most 6 decimals). Blank lines and lines starting with `#` are
    /// skipped. **A combination the file leaves out keeps its built-in
    /// price.** Every problem is reported, each with the file and line.
    pub fn from_csv(bytes: &[u8], path: &Path) -> Result<PriceTable, PriceFileError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes));
        let mut problems = Vec::new();
        let mut columns: Option<[usize; 3]> = None;
        let mut set: [[Option<(Usd, u64)>; 2]; 4] = [[None; 2]; 4];
        for result in reader.records() {
            let record = match result {
                Ok(record) => record,
                Err(error) => {
                    let line = error.position().map_or(0, csv::Position::line);
                    problems.push(PriceFileProblem::new(line, format!("unreadable: {error}")));
                    continue;
                }
            };
            let line = record.position().map_or(0, csv::Position::line);
            // Comments are skipped here rather than by the csv reader, whose
            // line numbers run behind after a comment line.
            if record.iter().all(str::is_empty) || record[0].starts_with('#') {
                continue;
            }
            match columns {
                None => match header_columns(&record) {
                    Ok(found) => columns = Some(found),
                    Err(message) => {
                        problems.push(PriceFileProblem::new(line, message));
                        break;
                    }
                },
                Some(columns) => {
                    if let Err(message) = set_price(&mut set, &record, columns, line) {
                        problems.push(PriceFileProblem::new(line, message));
                    }
                }
            }
        }
        if columns.is_none() && problems.is_empty() {
            let message = format!("empty: expected the header {}", PRICE_COLUMNS.join(","));
            problems.push(PriceFileProblem::new(1, message));
        }
        if !problems.is_empty() {
            let path = path.to_owned();
            return Err(PriceFileError::Invalid { path, problems });
        }
        Ok(PriceTable::with_overrides(set, path))
    }

    /// The built-in table with the prices a file set.
    fn with_overrides(set: [[Option<(Usd, u64)>; 2]; 4], path: &Path) -> PriceTable {
        let mut table = PriceTable::builtin();
        let mut n_set = 0;
        for (row, prices) in table.per_second.iter_mut().zip(set) {
            for (price, from_file) in row.iter_mut().zip(prices) {
                if let Some((usd, _line)) = from_file {
                    *price = usd;
                    n_set += 1;
                }
            }
        }
        let path = path.to_owned();
        table.source = PriceSource::File { path, n_set };
        table
    }

    /// Where the prices came from, for display.
    pub fn source(&self) -> &PriceSource {
        &self.source
    }

    /// The price of one second of video; `None` for a resolution that is
    /// not one of the four (the validator lets none through).
    pub fn price_per_second(&self, resolution: &str, audio: bool) -> Option<Usd> {
        resolution_index(resolution).map(|index| self.per_second[index][usize::from(audio)])
    }

    /// The estimated cost of one video: seconds × price per second, exact.
    pub fn cost(&self, resolution: &str, duration_seconds: u32, audio: bool) -> Option<Usd> {
        let price = self.price_per_second(resolution, audio)?;
        // Prices are capped at MAX_USD_PER_SECOND, so a u32 duration cannot
        // overflow; saturating keeps that true for any table.
        Some(Usd(price.0.saturating_mul(u64::from(duration_seconds))))
    }

    /// Every price, smallest resolution first, without audio before with:
    /// `(resolution, audio, price per second)`.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, bool, Usd)> + '_ {
        BUILTIN
            .iter()
            .zip(&self.per_second)
            .flat_map(|((name, _), prices)| [(*name, false, prices[0]), (*name, true, prices[1])])
    }
}

/// The position of a resolution in `BUILTIN` (smallest first), in any case.
fn resolution_index(resolution: &str) -> Option<usize> {
    BUILTIN
        .iter()
        .position(|(name, _)| name.eq_ignore_ascii_case(resolution.trim()))
}

/// The header of a prices file: where each of `PRICE_COLUMNS` is.
fn header_columns(record: &csv::StringRecord) -> Result<[usize; 3], String> {
    let mut found: [Option<usize>; 3] = [None; 3];
    for (position, name) in record.iter().enumerate() {
        let name = name.to_ascii_lowercase();
        let Some(column) = PRICE_COLUMNS.iter().position(|wanted| *wanted == name) else {
            return Err(format!(
                "unknown column {name:?}: the header is {}",
                PRICE_COLUMNS.join(",")
            ));
        };
        if found[column].replace(position).is_some() {
            return Err(format!("column {name:?} appears twice"));
        }
    }
    let mut columns = [0; 3];
    for ((column, position), name) in columns.iter_mut().zip(found).zip(PRICE_COLUMNS) {
        *column = position.ok_or_else(|| {
            format!(
                "missing column {name:?}: the header is {}",
                PRICE_COLUMNS.join(",")
            )
        })?;
    }
    Ok(columns)
}

/// Reads one row of a prices file into `set`, or says what is wrong with it.
fn set_price(
    set: &mut [[Option<(Usd, u64)>; 2]; 4],
    record: &csv::StringRecord,
    [resolution, audio, price]: [usize; 3],
    line: u64,
) -> Result<(), String> {
    if record.len() != PRICE_COLUMNS.len() {
        return Err(format!(
            "expected {} fields like the header, found {}",
            PRICE_COLUMNS.len(),
            record.len()
        ));
    }
    let resolution_text = &record[resolution];
    let index = resolution_index(resolution_text).ok_or_else(|| {
        let names: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
        format!(
            "unknown resolution {resolution_text:?}: use {}",
            names.join(", ")
        )
    })?;
    let audio_text = &record[audio];
    let audio = parse_bool(audio_text)
        .ok_or_else(|| format!("audio must be true/false, yes/no or 1/0, got {audio_text:?}"))?;
    let usd = Usd::parse(&record[price]).map_err(|error| format!("usd_per_second: {error}"))?;
    if usd == Usd::ZERO {
        return Err("usd_per_second is 0: write the price you are charged".to_owned());
    }
    if usd > MAX_USD_PER_SECOND {
        return Err(format!(
            "usd_per_second is {usd}, more than {MAX_USD_PER_SECOND}: prices are per second of video"
        ));
    }
    let slot = &mut set[index][usize::from(audio)];
    if let Some((_, first_line)) = slot {
        let name = BUILTIN[index].0;
        let with = if audio { "with" } else { "without" };
        return Err(format!(
            "{name} {with} audio is already priced on line {first_line}"
        ));
    }
    *slot = Some((usd, line));
    Ok(())
}

/// A prices file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceFileError {
    #[error("failed to read prices file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", invalid_message(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<PriceFileProblem>,
    },
}

/// One thing wrong with one line of a prices file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceFileProblem {
    /// 1-based line in the file.
    pub line: u64,
    pub message: String,
}

impl PriceFileProblem {
    fn new(line: u64, message: String) -> PriceFileProblem {
        PriceFileProblem { line, message }
    }
}

/// `prices file P has 2 problem(s):` then one `P: line N: what` a line.
fn invalid_message(path: &Path, problems: &[PriceFileProblem]) -> String {
    let path = path.display();
    let mut message = format!("prices file {path} has {} problem(s):", problems.len());
    for problem in problems {
        message.push_str(&format!(
            "\n  {path}: line {}: {}",
            problem.line, problem.message
        ));
    }
    message
}

/// Jobs of one resolution, duration and audio setting in a `CostBreakdown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostGroup {
    pub resolution: String,
    pub duration_seconds: u32,
    pub audio: bool,
    pub n_jobs: u64,
    pub subtotal: Usd,
}

impl CostGroup {
    /// Groups sort by resolution (smallest first; an unknown one after the
    /// four, by name), then duration, then without audio before with.
    fn cmp_key(&self, resolution: &str, duration_seconds: u32, audio: bool) -> std::cmp::Ordering {
        let rank = |name: &str| resolution_index(name).unwrap_or(BUILTIN.len());
        (rank(&self.resolution), self.resolution.as_str())
            .cmp(&(rank(resolution), resolution))
            .then(self.duration_seconds.cmp(&duration_seconds))
            .then(self.audio.cmp(&audio))
    }
}

/// The costliest row of a plan: its manifest line and cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCost {
    pub line: u64,
    pub cost: Usd,
}

/// A plan's estimated cost: the total, the number of jobs, subtotals by
/// (resolution, duration, audio) and the most expensive row.
///
/// Memory is bounded by the number of groups, not rows: a validated manifest
/// has at most 4 resolutions × 15 durations × 2 = 120.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostBreakdown {
    total: Usd,
    n_jobs: u64,
    /// Kept sorted (see `CostGroup::cmp_key`).
    groups: Vec<CostGroup>,
    most_expensive: Option<RowCost>,
}

impl CostBreakdown {
    pub fn new() -> CostBreakdown {
        CostBreakdown::default()
    }

    /// Counts one job. Rows should be added in manifest order: among rows
    /// of equal cost, the first added stays the most expensive.
    pub fn add(
        &mut self,
        resolution: &str,
        duration_seconds: u32,
        audio: bool,
        cost: Usd,
        row_line: u64,
    ) {
        self.add_many(resolution, duration_seconds, audio, cost, row_line, 1);
    }

    /// Counts `n` jobs of the same kind and cost, the first of them on
    /// `first_line`: the same as `add` for each in manifest order.
    pub fn add_many(
        &mut self,
        resolution: &str,
        duration_seconds: u32,
        audio: bool,
        cost: Usd,
        first_line: u64,
        n: u64,
    ) {
        let row_line = first_line;
        let all = Usd::from_micros(cost.micros().saturating_mul(n));
        self.total += all;
        self.n_jobs += n;
        let found = self
            .groups
            .binary_search_by(|group| group.cmp_key(resolution, duration_seconds, audio));
        let index = found.unwrap_or_else(|index| {
            let group = CostGroup {
                resolution: resolution.to_owned(),
                duration_seconds,
                audio,
                n_jobs: 0,
                subtotal: Usd::ZERO,
            };
            self.groups.insert(index, group);
            index
        });
        let group = &mut self.groups[index];
        group.n_jobs += n;
        group.subtotal += all;
        if self.most_expensive.is_none_or(|row| cost > row.cost) {
            self.most_expensive = Some(RowCost {
                line: row_line,
                cost,
            });
        }
    }

    pub fn total(&self) -> Usd {
        self.total
    }

    pub fn n_jobs(&self) -> u64 {
        self.n_jobs
    }

    pub fn is_empty(&self) -> bool {
        self.n_jobs == 0
    }

    /// The subtotals, smallest resolution first, then by duration, then
    /// without audio before with.
    pub fn groups(&self) -> &[CostGroup] {
        &self.groups
    }

    /// The most expensive row (the first added on ties); `None` when empty.
    pub fn most_expensive(&self) -> Option<RowCost> {
        self.most_expensive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::RESOLUTIONS;

    fn usd(text: &str) -> Usd {
        Usd::parse(text).unwrap()
    }

    fn prices(text: &str) -> Result<PriceTable, PriceFileError> {
        PriceTable::from_csv(text.as_bytes(), Path::new("prices.csv"))
    }

    fn problems(text: &str) -> Vec<(u64, String)> {
        match prices(text) {
            Err(PriceFileError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|problem| (problem.line, problem.message))
                .collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn every_builtin_price() {
        let table = PriceTable::builtin();
        for (resolution, without, with) in [
            ("360p", "0.025", "0.035"),
            ("540p", "0.035", "0.045"),
            ("720p", "0.045", "0.060"),
            ("1080p", "0.090", "0.115"),
        ] {
            assert_eq!(
                table.price_per_second(resolution, false),
                Some(usd(without))
            );
            assert_eq!(table.price_per_second(resolution, true), Some(usd(with)));
        }
        assert_eq!(table.price_per_second("480p", false), None);
        assert_eq!(table.cost("4k", 5, true), None);
        assert_eq!(table.entries().count(), 8);
        assert_eq!(
            table.source().to_string(),
            "built-in list prices, 2026-11-26"
        );
    }

    #[test]
    fn the_table_covers_exactly_the_resolutions_the_validator_allows() {
        let names: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, RESOLUTIONS);
    }

    #[test]
    fn a_cost_is_seconds_times_the_price() {
        let table = PriceTable::builtin();
        assert_eq!(table.cost("720p", 5, false), Some(usd("0.225")));
        assert_eq!(table.cost("1080p", 15, true), Some(usd("1.725")));
        assert_eq!(table.cost("360p", 1, false), Some(usd("0.025")));
        assert_eq!(table.cost("720P", 0, true), Some(Usd::ZERO));
    }

    #[test]
    fn a_million_additions_are_exact() {
        let cost = PriceTable::builtin().cost("720p", 5, false).unwrap();
        let mut breakdown = CostBreakdown::new();
        for line in 2..1_000_002 {
            breakdown.add("720p", 5, false, cost, line);
        }
        let expected = Usd::from_micros(225_000 * MICROS_PER_USD);
        assert_eq!(breakdown.total(), expected);
        assert_eq!(breakdown.total().to_string(), "$225000.00");
        assert_eq!(std::iter::repeat_n(cost, 1_000_000).sum::<Usd>(), expected);
        assert_eq!(breakdown.n_jobs(), 1_000_000);
        assert_eq!(breakdown.groups().len(), 1);
        // A float sum of the same prices drifts: the reason for micro-dollars.
        let float: f64 = std::iter::repeat_n(0.225_f64, 1_000_000).sum();
        assert_ne!(float, 225_000.0);
    }

    #[test]
    fn checked_and_saturating_arithmetic() {
        let max = Usd::from_micros(u64::MAX);
        assert_eq!(max.checked_add(Usd::from_micros(1)), None);
        assert_eq!(max + Usd::from_micros(1), max);
        assert_eq!(usd("1").checked_sub(usd("2")), None);
        assert_eq!(usd("3").checked_sub(usd("1")), Some(usd("2")));
        assert_eq!(usd("1").saturating_sub(usd("2")), Usd::ZERO);
        assert_eq!(usd("0.5").checked_mul(3), Some(usd("1.5")));
        assert_eq!(max.checked_mul(2), None);
        let amounts = [usd("0.1"), usd("0.2")];
        assert_eq!(amounts.iter().sum::<Usd>(), usd("0.3"));
    }

    #[test]
    fn amounts_are_exact_and_plain() {
        assert_eq!(Usd::from_micros(225_000).amount(), "0.225");
        assert_eq!(usd("1.92").amount(), "1.92");
        assert_eq!(usd("3").amount(), "3.00");
        assert_eq!(Usd::from_micros(1).amount(), "0.000001");
        assert_eq!(usd(&usd("12.5").amount()), usd("12.5"), "it parses back");
    }

    #[test]
    fn display_rounds_half_up_to_cents() {
        for (micros, shown) in [
            (0, "$0.00"),
            (1_230_000, "$1.23"),
            (1_234_999, "$1.23"),
            (1_235_000, "$1.24"),
            (125_000, "$0.13"),
            (10_000, "$0.01"),
            (995_000, "$1.00"),
            (1_999_999, "$2.00"),
            (225_000_000_000, "$225000.00"),
            (u64::MAX, "$18446744073709.55"),
        ] {
            assert_eq!(Usd::from_micros(micros).to_string(), shown, "{micros}");
        }
    }

    #[test]
    fn display_keeps_every_decimal_under_one_cent() {
        for (micros, shown) in [
            (4_500, "$0.0045"),
            (5_000, "$0.005"),
            (1, "$0.000001"),
            (9_999, "$0.009999"),
        ] {
            assert_eq!(Usd::from_micros(micros).to_string(), shown, "{micros}");
            assert_eq!(usd(shown), Usd::from_micros(micros), "round trip {shown}");
        }
    }

    #[test]
    fn parse_accepts_what_users_type() {
        for (text, micros) in [
            ("1", 1_000_000),
            ("1.00", 1_000_000),
            ("$12.5", 12_500_000),
            ("0.25", 250_000),
            (" $ 3 ", 3_000_000),
            (".5", 500_000),
            ("2.", 2_000_000),
            ("0", 0),
            ("0.000001", 1),
            ("007.10", 7_100_000),
            ("18446744073709.551615", u64::MAX),
        ] {
            assert_eq!(Usd::parse(text), Ok(Usd::from_micros(micros)), "{text}");
            assert_eq!(text.parse::<Usd>(), Ok(Usd::from_micros(micros)), "{text}");
        }
    }

    #[test]
    fn parse_refuses_with_a_reason() {
        for (text, says) in [
            ("", "required"),
            ("  ", "required"),
            ("-1", "negative"),
            ("-$1", "negative"),
            ("$-0.5", "negative"),
            ("1.1234567", "more than 6 decimals"),
            ("1,000", "thousands separators"),
            ("1,5", "dot for cents"),
            ("abc", "not an amount"),
            ("$", "not an amount"),
            (".", "not an amount"),
            ("1.2.3", "not an amount"),
            ("1e3", "not an amount"),
            ("+5", "not an amount"),
            ("5 USD", "not an amount"),
            ("0x10", "not an amount"),
            ("18446744073709.551616", "too large"),
            ("99999999999999999999", "too large"),
        ] {
            let error = Usd::parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_complete_prices_file_replaces_every_price() {
        let mut text = "resolution,audio,usd_per_second\n".to_owned();
        for (index, (name, _)) in BUILTIN.iter().enumerate() {
            text.push_str(&format!(
                "{name},no,0.0{}\n{name},yes,$0.1{}\n",
                index + 1,
                index + 1
            ));
        }
        let table = prices(&text).unwrap();
        assert_eq!(table.price_per_second("360p", false), Some(usd("0.01")));
        assert_eq!(table.price_per_second("1080p", true), Some(usd("0.14")));
        assert_eq!(table.source().to_string(), "prices.csv");
    }

    #[test]
    fn a_partial_prices_file_keeps_the_builtin_prices() {
        let text = "\u{feff}# HighwayAPI, December\r\n Resolution , AUDIO, usd_per_second\r\n\r\n720p, true ,0.05\r\n1080P,No,0.08\r\n";
        let table = prices(text).unwrap();
        let builtin = PriceTable::builtin();
        assert_eq!(table.price_per_second("720p", true), Some(usd("0.05")));
        assert_eq!(table.price_per_second("1080p", false), Some(usd("0.08")));
        for (resolution, audio, price) in table.entries() {
            if (resolution, audio) != ("720p", true) && (resolution, audio) != ("1080p", false) {
                assert_eq!(builtin.price_per_second(resolution, audio), Some(price));
            }
        }
        assert_eq!(
            table.source(),
            &PriceSource::File {
                path: PathBuf::from("prices.csv"),
                n_set: 2
            }
        );
        assert_eq!(
            table.source().to_string(),
            "prices.csv (built-in list prices, 2026-11-26, for the other 6)"
        );
    }

    #[test]
    fn the_readme_example_is_a_good_prices_file() {
        let readme = include_str!("../README.md");
        let prices_section = &readme[readme.find("### Prices").unwrap()..];
        let start = prices_section.find("```csv\n").unwrap() + "```csv\n".len();
        let example = &prices_section[start..];
        let example = &example[..example.find("```").unwrap()];
        let table = prices(example).unwrap();
        assert_eq!(table.price_per_second("720p", true), Some(usd("0.055")));
        assert_eq!(table.price_per_second("360p", true), Some(usd("0.035")));
    }

    #[test]
    fn columns_may_come_in_any_order_and_a_header_alone_changes_nothing() {
        let table = prices("usd_per_second,resolution,audio\n0.5,540p,1\n").unwrap();
        assert_eq!(table.price_per_second("540p", true), Some(usd("0.5")));
        let table = prices("resolution,audio,usd_per_second\n").unwrap();
        assert_eq!(
            table.entries().collect::<Vec<_>>(),
            PriceTable::builtin().entries().collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "resolution,audio,usd_per_second\n\
                    720p,false,0.05\n\
                    480p,false,0.05\n\
                    720p,maybe,0.05\n\
                    720p,true,-0.05\n\
                    720p,true,0.0000001\n\
                    720p,true,0\n\
                    720p,true,5000\n\
                    720p,no,0.04\n\
                    720p,true\n\
                    # a comment\n\
                    1080p,true,0.12,extra\n\
                    360p,true,abc\n";
        let found = problems(text);
        let lines: Vec<u64> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10, 12, 13], "{found:#?}");
        for ((_, message), says) in found.iter().zip([
            "unknown resolution \"480p\": use 360p, 540p, 720p, 1080p",
            "audio must be true/false, yes/no or 1/0, got \"maybe\"",
            "negative",
            "more than 6 decimals",
            "is 0",
            "more than $1000.00",
            "720p without audio is already priced on line 2",
            "expected 3 fields",
            "expected 3 fields",
            "usd_per_second: \"abc\" is not an amount",
        ]) {
            assert!(message.contains(says), "{message:?} should say {says:?}");
        }
    }

    #[test]
    fn a_bad_header_or_an_empty_file_is_reported() {
        let found = problems("resolution,audio,price\n720p,no,0.05\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 1);
        assert!(found[0].1.contains("unknown column \"price\""), "{found:?}");
        let found = problems("# prices\nresolution,audio\n");
        assert_eq!(found[0].0, 2);
        assert!(
            found[0].1.contains("missing column \"usd_per_second\""),
            "{found:?}"
        );
        let found = problems("audio,audio,usd_per_second,resolution\n");
        assert!(found[0].1.contains("\"audio\" appears twice"), "{found:?}");
        for empty in ["", "\n\n", "# only a comment\n"] {
            let found = problems(empty);
            assert_eq!(found.len(), 1);
            assert!(found[0].1.contains("empty"), "{found:?}");
        }
        let bytes = b"resolution,audio,usd_per_second\n720p,no,0.05\n720p,yes,\xff\n";
        let error = PriceTable::from_csv(bytes, Path::new("p.csv")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("p.csv: line 3: unreadable"), "{message}");
    }

    #[test]
    fn an_invalid_file_names_the_file_and_each_line() {
        let error = prices("resolution,audio,usd_per_second\n8k,no,1\n720p,no,x\n").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("prices file prices.csv has 2 problem(s):"),
            "{message}"
        );
        assert!(
            message.contains("\n  prices.csv: line 2: unknown resolution"),
            "{message}"
        );
        assert!(
            message.contains("\n  prices.csv: line 3: usd_per_second:"),
            "{message}"
        );
    }

    #[test]
    fn from_file_reads_and_reports_a_missing_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("prices.csv");
        std::fs::write(&path, "resolution,audio,usd_per_second\n360p,no,0.02\n").unwrap();
        let table = PriceTable::from_file(&path).unwrap();
        assert_eq!(table.cost("360p", 10, false), Some(usd("0.2")));
        assert!(
            table
                .source()
                .to_string()
                .starts_with(&path.display().to_string())
        );
        let missing = folder.path().join("nope.csv");
        let error = PriceTable::from_file(&missing).unwrap_err();
        assert!(matches!(error, PriceFileError::Read { .. }));
        assert!(error.to_string().contains("nope.csv"), "{error}");
    }

    #[test]
    fn a_breakdown_groups_in_a_stable_sorted_order() {
        let table = PriceTable::builtin();
        let rows = [
            ("1080p", 5, false),
            ("720p", 10, true),
            ("360p", 5, true),
            ("720p", 5, false),
            ("720p", 10, false),
            ("720p", 5, false),
            ("540p", 15, false),
        ];
        let mut breakdown = CostBreakdown::new();
        assert!(breakdown.is_empty());
        assert_eq!(breakdown.most_expensive(), None);
        for (line, (resolution, duration, audio)) in (2..).zip(rows) {
            let cost = table.cost(resolution, duration, audio).unwrap();
            breakdown.add(resolution, duration, audio, cost, line);
        }
        let groups: Vec<(&str, u32, bool, u64, Usd)> = breakdown
            .groups()
            .iter()
            .map(|group| {
                let key = (
                    group.resolution.as_str(),
                    group.duration_seconds,
                    group.audio,
                );
                (key.0, key.1, key.2, group.n_jobs, group.subtotal)
            })
            .collect();
        assert_eq!(
            groups,
            [
                ("360p", 5, true, 1, usd("0.175")),
                ("540p", 15, false, 1, usd("0.525")),
                ("720p", 5, false, 2, usd("0.45")),
                ("720p", 10, false, 1, usd("0.45")),
                ("720p", 10, true, 1, usd("0.6")),
                ("1080p", 5, false, 1, usd("0.45")),
            ]
        );
        assert_eq!(breakdown.n_jobs(), 7);
        assert_eq!(breakdown.total(), usd("2.65"));
        let subtotals: Usd = breakdown.groups().iter().map(|group| group.subtotal).sum();
        assert_eq!(subtotals, breakdown.total());
        let top = breakdown.most_expensive().unwrap();
        assert_eq!((top.line, top.cost), (3, usd("0.6")));
    }

    #[test]
    fn the_first_of_equally_expensive_rows_wins() {
        let mut breakdown = CostBreakdown::new();
        breakdown.add("720p", 5, false, usd("0.45"), 7);
        breakdown.add("1080p", 5, false, usd("0.45"), 3);
        breakdown.add("720p", 10, false, usd("0.45"), 9);
        breakdown.add("360p", 1, false, usd("0.025"), 1);
        assert_eq!(
            breakdown.most_expensive(),
            Some(RowCost {
                line: 7,
                cost: usd("0.45")
            })
        );
        breakdown.add("720p", 11, false, usd("0.495"), 12);
        assert_eq!(breakdown.most_expensive().unwrap().line, 12);
    }

    #[test]
    fn an_unknown_resolution_sorts_after_the_four() {
        let mut breakdown = CostBreakdown::new();
        breakdown.add("8k", 5, false, Usd::ZERO, 2);
        breakdown.add("1080p", 5, false, Usd::ZERO, 3);
        breakdown.add("4k", 5, false, Usd::ZERO, 4);
        let order: Vec<&str> = breakdown
            .groups()
            .iter()
            .map(|g| g.resolution.as_str())
            .collect();
        assert_eq!(order, ["1080p", "4k", "8k"]);
    }
}
