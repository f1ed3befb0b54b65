//! .xlsx and .xlsm workbooks read directly with zip and quick-xml, because
//! calamine holds the whole shared-string table in memory (a million rows
//! of distinct prompts is hundreds of MB). Here the table goes to a
//! temporary file (`shared_strings`), and the sheet is streamed cell by
//! cell, each cell read as calamine reads it: numbers as floats (dates by
//! their cell's number format), booleans, errors, inline and rich text,
//! formulas' saved values.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use calamine::{CellErrorType, Data, ExcelDateTime, ExcelDateTimeType};
use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;
use zip::read::ZipFile;

use super::SheetListing;
use super::shared_strings::{SharedStrings, SharedStringsWriter};

type Archive = ZipArchive<BufReader<File>>;
type Xml<'a> = quick_xml::Reader<BufReader<ZipFile<'a, BufReader<File>>>>;

/// What a number in a cell is, by the cell's number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberKind {
    Plain,
    Date,
    Duration,
}

/// An opened .xlsx package: its worksheets and what reading cells needs.
pub(super) struct XlsxWorkbook {
    zip: Archive,
    pub(super) sheets: Vec<SheetListing>,
    /// The part holding each sheet, in the order of `sheets`.
    paths: Vec<String>,
    date1904: bool,
    /// The number kind of each cell style (`s="3"` is the fourth).
    styles: Vec<NumberKind>,
    strings: SharedStrings,
}

/// One cell as the sheet stores it.
pub(super) struct XlsxCell {
    /// (row, column), both from 0.
    pub(super) position: (u32, u32),
    pub(super) value: Data,
    /// Whether the cell holds a formula (its value is the saved result).
    pub(super) formula: bool,
}

impl XlsxWorkbook {
    pub(super) fn open(path: &Path) -> Result<XlsxWorkbook, String> {
        let file = File::open(path).map_err(|error| format!("cannot open it: {error}"))?;
        let mut zip = ZipArchive::new(BufReader::new(file))
            .map_err(|error| format!("not a readable .xlsx package: {error}"))?;
        let workbook_path = office_document(&mut zip)?;
        let relations = relationships(&mut zip, &workbook_path)?;
        let (sheets, paths, date1904) = read_sheet_list(&mut zip, &workbook_path, &relations)?;
        let target_of = |kind: &str, default: &str| {
            relations
                .values()
                .find(|(_, typ)| typ.rsplit('/').next() == Some(kind))
                .map_or_else(
                    || resolve(&workbook_path, default),
                    |(target, _)| resolve(&workbook_path, target),
                )
        };
        let styles = read_styles(&mut zip, &target_of("styles", "styles.xml"))?;
        let strings =
            read_shared_strings(&mut zip, &target_of("sharedStrings", "sharedStrings.xml"))?;
        Ok(XlsxWorkbook {
            zip,
            sheets,
            paths,
            date1904,
            styles,
            strings,
        })
    }

    /// The cells of the sheet named `name` (one of `sheets`).
    pub(super) fn cells(&mut self, name: &str) -> Result<SheetCells<'_>, String> {
        let index = self
            .sheets
            .iter()
            .position(|sheet| sheet.name == name)
            .ok_or_else(|| format!("no sheet named {name:?}"))?;
        let path = &self.paths[index];
        let mut xml = part(&mut self.zip, path)?
            .ok_or_else(|| format!("the sheet's part {path} is missing from the package"))?;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match xml.read_event_into(&mut buf).map_err(xml_error(path))? {
                Event::Start(e) if e.local_name().as_ref() == "sheetData" => break,
                Event::Eof => return Err(format!("{path} has no sheet data (not a worksheet?)")),
                _ => {}
            }
        }
        Ok(SheetCells {
            xml,
            path: path.clone(),
            strings: &mut self.strings,
            styles: &self.styles,
            date1904: self.date1904,
            row: 0,
            column: 0,
            buf,
            inner: Vec::new(),
            text: String::new(),
        })
    }
}

/// The cells of one sheet, in the order the sheet stores them.
pub(super) struct SheetCells<'a> {
    xml: Xml<'a>,
    path: String,
    strings: &'a mut SharedStrings,
    styles: &'a [NumberKind],
    date1904: bool,
    /// Where a cell without an `r` reference is: after the previous one.
    row: u32,
    column: u32,
    buf: Vec<u8>,
    inner: Vec<u8>,
    text: String,
}

impl SheetCells<'_> {
    pub(super) fn next_cell(&mut self) -> Result<Option<XlsxCell>, String> {
        loop {
            self.buf.clear();
            let event = self.xml.read_event_into(&mut self.buf);
            let attributes = match event.map_err(xml_error(&self.path))? {
                Event::Start(e) if e.local_name().as_ref() == "row" => {
                    if let Some(reference) = attribute(&e, "r")? {
                        self.row = parse_reference(&reference)?.0;
                    }
                    self.column = 0;
                    continue;
                }
                Event::End(e) if e.local_name().as_ref() == "row" => {
                    self.row = self.row.saturating_add(1);
                    self.column = 0;
                    continue;
                }
                Event::Start(e) if e.local_name().as_ref() == "c" => CellAttributes::of(&e)?,
                Event::End(e) if e.local_name().as_ref() == "sheetData" => return Ok(None),
                Event::Eof => return Err(format!("{} ends inside the sheet data", self.path)),
                _ => continue,
            };
            return self.cell(attributes).map(Some);
        }
    }

    /// Reads a `<c>` element's children: its formula, value or inline text.
    fn cell(&mut self, attributes: CellAttributes) -> Result<XlsxCell, String> {
        let position = attributes.position.unwrap_or((self.row, self.column));
        self.column = position.1.saturating_add(1);
        let mut cell = XlsxCell {
            position,
            value: Data::Empty,
            formula: false,
        };
        loop {
            self.inner.clear();
            let event = self.xml.read_event_into(&mut self.inner);
            let child = match event.map_err(xml_error(&self.path))? {
                Event::Start(e) => match e.local_name().as_ref() {
                    "f" => Child::Formula,
                    "is" => Child::Inline,
                    "v" => Child::Value,
                    _ => Child::Other(e.name().as_ref().to_owned()),
                },
                Event::End(e) if e.local_name().as_ref() == "c" => return Ok(cell),
                Event::Eof => return Err(format!("{} ends inside a cell", self.path)),
                _ => continue,
            };
            match child {
                Child::Formula => {
                    cell.formula = true;
                    self.skip("f")?;
                }
                Child::Inline => {
                    let text = read_rich_text(&mut self.xml, "is", &mut self.inner, &self.path)?;
                    cell.value = Data::String(text);
                }
                Child::Value if matches!(attributes.kind, CellType::Inline) => {
                    self.skip("v")?;
                }
                Child::Value => {
                    self.text.clear();
                    read_text(
                        &mut self.xml,
                        "v",
                        &mut self.inner,
                        &mut self.text,
                        &self.path,
                    )?;
                    cell.value = self.value(&attributes)?;
                }
                Child::Other(name) => self.skip(&name)?,
            }
        }
    }

    /// The value of a `<v>` (in `self.text`) by the cell's type and style.
    fn value(&mut self, attributes: &CellAttributes) -> Result<Data, String> {
        let text = self.text.as_str();
        Ok(match &attributes.kind {
            CellType::Shared if text.is_empty() => Data::Empty,
            CellType::Shared => {
                let index = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("the shared string index {text:?} is not a number"))?;
                Data::String(self.strings.get(index)?.to_owned())
            }
            CellType::Bool => boolean(text)?,
            CellType::Date => Data::DateTimeIso(text.to_owned()),
            CellType::Error => Data::Error(
                text.parse::<CellErrorType>()
                    .map_err(|_| format!("the cell error {text:?} is not one Excel has"))?,
            ),
            CellType::Text | CellType::Inline => Data::String(unescape_ooxml(text).into_owned()),
            CellType::Number | CellType::Untyped if text.is_empty() => Data::Empty,
            CellType::Number | CellType::Untyped => match text.parse::<f64>() {
                Ok(number) => self.number(number, attributes.style),
                // Without a type, text that is not a number is text.
                Err(_) if matches!(attributes.kind, CellType::Untyped) => {
                    Data::String(text.to_owned())
                }
                Err(_) => return Err(format!("the number cell holds {text:?}")),
            },
            CellType::Unknown(other) => {
                return Err(format!("a cell has the unknown type t={other:?}"));
            }
        })
    }

    /// A number, as a date or duration when its cell's format shows one.
    fn number(&self, number: f64, style: Option<usize>) -> Data {
        let kind = style.and_then(|style| self.styles.get(style).copied());
        let typ = match kind {
            Some(NumberKind::Date) => ExcelDateTimeType::DateTime,
            Some(NumberKind::Duration) => ExcelDateTimeType::TimeDelta,
            Some(NumberKind::Plain) | None => return Data::Float(number),
        };
        Data::DateTime(ExcelDateTime::new(number, typ, self.date1904))
    }

    fn skip(&mut self, name: &str) -> Result<(), String> {
        self.inner.clear();
        self.xml
            .read_to_end_into(quick_xml::name::QName(name), &mut self.inner)
            .map(|_| ())
            .map_err(xml_error(&self.path))
    }
}

/// A child element of a cell.
enum Child {
    Formula,
    Inline,
    Value,
    Other(String),
}

/// The attributes of a `<c>` element that reading its value needs.
struct CellAttributes {
    /// `r` (`C4`), as (row, column) from 0.
    position: Option<(u32, u32)>,
    kind: CellType,
    /// `s`: the cell's style, which says whether a number is a date.
    style: Option<usize>,
}

/// A cell's `t` attribute.
enum CellType {
    /// No `t`: a number, or text when it is not one.
    Untyped,
    /// `n`
    Number,
    /// `s`: an index into the shared strings.
    Shared,
    /// `str`: a formula's text result.
    Text,
    /// `inlineStr`: the text is in `<is>`.
    Inline,
    /// `b`
    Bool,
    /// `e`: `#DIV/0!` and the like.
    Error,
    /// `d`: an ISO 8601 date.
    Date,
    Unknown(String),
}

impl CellAttributes {
    fn of(element: &BytesStart<'_>) -> Result<CellAttributes, String> {
        let mut attributes = CellAttributes {
            position: None,
            kind: CellType::Untyped,
            style: None,
        };
        for attribute in element.attributes().with_checks(false) {
            let attribute = attribute.map_err(|error| format!("a cell's attributes: {error}"))?;
            let value = attribute.value.as_ref();
            match attribute.key.local_name().as_ref() {
                "r" => match parse_reference(value)? {
                    (row, Some(column)) => attributes.position = Some((row, column)),
                    (_, None) => return Err(format!("the cell reference {value:?} has no column")),
                },
                "t" => attributes.kind = CellType::of(value),
                "s" => attributes.style = value.trim().parse().ok(),
                _ => {}
            }
        }
        Ok(attributes)
    }
}

impl CellType {
    fn of(value: &str) -> CellType {
        match value {
            "n" => CellType::Number,
            "s" => CellType::Shared,
            "str" => CellType::Text,
            "inlineStr" | "is" => CellType::Inline,
            "b" => CellType::Bool,
            "e" => CellType::Error,
            "d" => CellType::Date,
            other => CellType::Unknown(other.to_owned()),
        }
    }
}

/// A cell reference such as `C4` or a row's `4`, as (row, column) from 0.
fn parse_reference(reference: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("the cell reference {reference:?} is not like A1");
    let digits = reference
        .find(|c: char| c.is_ascii_digit())
        .ok_or_else(bad)?;
    let (letters, number) = reference.split_at(digits);
    let row: u32 = number.parse().map_err(|_| bad())?;
    let mut column: u32 = 0;
    for letter in letters.bytes() {
        if !letter.is_ascii_alphabetic() {
            return Err(bad());
        }
        let value = u32::from(letter.to_ascii_uppercase() - b'A') + 1;
        column = column
            .checked_mul(26)
            .and_then(|column| column.checked_add(value))
            .ok_or_else(bad)?;
    }
    let row = row.checked_sub(1).ok_or_else(bad)?;
    Ok((row, column.checked_sub(1)))
}

/// A boolean cell: Excel writes 0 or 1; XML Schema allows false and true.
fn boolean(text: &str) -> Result<Data, String> {
    match text.trim() {
        "" => Ok(Data::Empty),
        "0" => Ok(Data::Bool(false)),
        "1" => Ok(Data::Bool(true)),
        other if other.eq_ignore_ascii_case("false") => Ok(Data::Bool(false)),
        other if other.eq_ignore_ascii_case("true") => Ok(Data::Bool(true)),
        other => Err(format!("the boolean cell holds {other:?}")),
    }
}

fn xml_error(path: &str) -> impl Fn(quick_xml::Error) -> String + '_ {
    move |error| format!("{path} is not well-formed XML: {error}")
}

/// An attribute's value, with XML escapes resolved.
fn attribute(element: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    for attribute in element.attributes().with_checks(false) {
        let attribute = attribute.map_err(|error| format!("an attribute: {error}"))?;
        if attribute.key.as_ref() == name || attribute.key.local_name().as_ref() == name {
            return attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map(|value| Some(value.into_owned()))
                .map_err(|error| format!("the attribute {name}: {error}"));
        }
    }
    Ok(None)
}

/// An XML part of the package, found by its path (ignoring case, as Excel
/// does), or `None` when the package has no such part.
fn part<'a>(zip: &'a mut Archive, path: &str) -> Result<Option<Xml<'a>>, String> {
    let found = zip.index_for_name(path).or_else(|| {
        zip.file_names_raw().position(|name| {
            String::from_utf8_lossy(name)
                .replace('\\', "/")
                .eq_ignore_ascii_case(path)
        })
    });
    let Some(index) = found else {
        return Ok(None);
    };
    let file = zip
        .by_index(index)
        .map_err(|error| format!("cannot read {path} in the package: {error}"))?;
    let mut xml = quick_xml::Reader::from_reader(BufReader::new(file));
    let config = xml.config_mut();
    config.check_end_names = false;
    config.trim_text(false);
    config.expand_empty_elements = true;
    Ok(Some(xml))
}

/// Reads the events of a part, calling `each` with every start tag.
fn each_start(
    xml: &mut Xml<'_>,
    path: &str,
    mut each: impl FnMut(&BytesStart<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match xml.read_event_into(&mut buf).map_err(xml_error(path))? {
            Event::Start(e) => each(&e)?,
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// The workbook part named by the package's relationships.
fn office_document(zip: &mut Archive) -> Result<String, String> {
    let mut target = None;
    if let Some(mut xml) = part(zip, "_rels/.rels")? {
        each_start(&mut xml, "_rels/.rels", |e| {
            if e.local_name().as_ref() == "Relationship"
                && attribute(e, "Type")?.is_some_and(|t| t.ends_with("/officeDocument"))
            {
                target = attribute(e, "Target")?;
            }
            Ok(())
        })?;
    }
    Ok(target.map_or_else(|| "xl/workbook.xml".to_owned(), |t| resolve("", &t)))
}

/// The workbook's relationships: id → (target, type).
fn relationships(
    zip: &mut Archive,
    workbook: &str,
) -> Result<HashMap<String, (String, String)>, String> {
    let (directory, name) = workbook.rsplit_once('/').unwrap_or(("", workbook));
    let path = if directory.is_empty() {
        format!("_rels/{name}.rels")
    } else {
        format!("{directory}/_rels/{name}.rels")
    };
    let mut relations = HashMap::new();
    let Some(mut xml) = part(zip, &path)? else {
        return Err(format!("the package has no {path}"));
    };
    each_start(&mut xml, &path, |e| {
        if e.local_name().as_ref() == "Relationship"
            && let Some(id) = attribute(e, "Id")?
        {
            let target = attribute(e, "Target")?.unwrap_or_default();
            let typ = attribute(e, "Type")?.unwrap_or_default();
            relations.insert(id, (target, typ));
        }
        Ok(())
    })?;
    Ok(relations)
}

/// A relationship's target as a path in the package: absolute (`/xl/…`) or
/// relative to the part that names it.
fn resolve(from: &str, target: &str) -> String {
    let mut parts: Vec<&str> = match target.strip_prefix('/') {
        Some(_) => Vec::new(),
        None => from.rsplit_once('/').map_or(Vec::new(), |(directory, _)| {
            directory
                .split('/')
                .filter(|part| !part.is_empty())
                .collect()
        }),
    };
    for segment in target.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            segment => parts.push(segment),
        }
    }
    parts.join("/")
}

type SheetList = (Vec<SheetListing>, Vec<String>, bool);

/// The sheets the workbook lists (name, visibility, kind, part) and
/// whether its dates count from 1904.
fn read_sheet_list(
    zip: &mut Archive,
    workbook: &str,
    relations: &HashMap<String, (String, String)>,
) -> Result<SheetList, String> {
    let (mut sheets, mut paths, mut date1904) = (Vec::new(), Vec::new(), false);
    let Some(mut xml) = part(zip, workbook)? else {
        return Err(format!("the package has no {workbook}"));
    };
    each_start(&mut xml, workbook, |e| {
        match e.local_name().as_ref() {
            "sheet" => {
                let name = attribute(e, "name")?.unwrap_or_default();
                let id = attribute(e, "id")?.unwrap_or_default();
                let (target, typ) = relations
                    .get(&id)
                    .ok_or_else(|| format!("the sheet {name:?} names no part ({id:?})"))?;
                let state = attribute(e, "state")?;
                sheets.push(SheetListing {
                    name,
                    visible: state.is_none_or(|state| state == "visible"),
                    worksheet: typ.rsplit('/').next() == Some("worksheet"),
                });
                paths.push(resolve(workbook, target));
            }
            "workbookPr" => {
                if let Some(flag) = attribute(e, "date1904")? {
                    date1904 = flag == "1" || flag == "true";
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((sheets, paths, date1904))
}

/// The number kind of every cell style (`cellXfs`), from the built-in
/// number formats and the workbook's own (`numFmts`).
fn read_styles(zip: &mut Archive, path: &str) -> Result<Vec<NumberKind>, String> {
    let Some(mut xml) = part(zip, path)? else {
        return Ok(Vec::new());
    };
    let mut custom: HashMap<String, NumberKind> = HashMap::new();
    let mut styles = Vec::new();
    let mut in_cell_styles = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match xml.read_event_into(&mut buf).map_err(xml_error(path))? {
            Event::Start(e) => match e.local_name().as_ref() {
                "numFmt" => {
                    if let (Some(id), Some(code)) =
                        (attribute(&e, "numFmtId")?, attribute(&e, "formatCode")?)
                    {
                        custom.insert(id, custom_format_kind(&code));
                    }
                }
                "cellXfs" => in_cell_styles = true,
                "xf" if in_cell_styles => {
                    let kind = attribute(&e, "numFmtId")?.map_or(NumberKind::Plain, |id| {
                        custom
                            .get(&id)
                            .copied()
                            .unwrap_or_else(|| builtin_format_kind(&id))
                    });
                    styles.push(kind);
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "cellXfs" => in_cell_styles = false,
            Event::Eof => return Ok(styles),
            _ => {}
        }
    }
}

/// Built-in number formats (ECMA-376 18.8.30) that show dates or times;
/// 46 (`[h]:mm:ss`) is a duration. As calamine reads them.
fn builtin_format_kind(id: &str) -> NumberKind {
    match id.trim().parse::<u16>() {
        Ok(14..=22 | 27..=36 | 45 | 47 | 50..=58) => NumberKind::Date,
        Ok(46) => NumberKind::Duration,
        _ => NumberKind::Plain,
    }
}

/// Whether a custom number format shows a date (a d, m, h, y or s outside
/// quotes, escapes and brackets, or AM/PM) or a duration (`[h]`, `[mm]`).
/// Ported from calamine's `detect_custom_number_format` (MIT), which is not
/// public, so dates read the same as before.
fn custom_format_kind(format: &str) -> NumberKind {
    let (mut escaped, mut quoted, mut brackets) = (false, false, 0u8);
    let (mut previous, mut hms, mut am_pm) = (' ', false, false);
    for c in format.chars() {
        match (c, escaped, quoted, am_pm, brackets) {
            (_, true, ..) => escaped = false,
            ('_' | '\\' | '*', ..) => escaped = true,
            ('"', _, true, _, _) => quoted = false,
            (_, _, true, _, _) => {}
            ('"', ..) => quoted = true,
            (';', ..) => return NumberKind::Plain,
            ('[', ..) => brackets = brackets.saturating_add(1),
            (']', .., 1) if hms => return NumberKind::Duration,
            (']', ..) => brackets = brackets.saturating_sub(1),
            ('a' | 'A', _, _, false, 0) => am_pm = true,
            ('p' | 'm' | '/' | 'P' | 'M', _, _, true, 0) => return NumberKind::Date,
            ('d' | 'm' | 'h' | 'y' | 's' | 'D' | 'M' | 'H' | 'Y' | 'S', _, _, false, 0) => {
                return NumberKind::Date;
            }
            _ => {
                if !(hms && c.eq_ignore_ascii_case(&previous)) {
                    hms = previous == '[' && matches!(c, 'm' | 'h' | 's' | 'M' | 'H' | 'S');
                }
            }
        }
        previous = c;
    }
    NumberKind::Plain
}

/// The shared strings, read once from their part into a temporary file.
fn read_shared_strings(zip: &mut Archive, path: &str) -> Result<SharedStrings, String> {
    let stored = |error: std::io::Error| format!("cannot store the shared strings: {error}");
    let Some(mut xml) = part(zip, path)? else {
        return SharedStrings::empty().map_err(stored);
    };
    let mut writer = SharedStringsWriter::new().map_err(stored)?;
    let (mut buf, mut inner) = (Vec::new(), Vec::new());
    loop {
        buf.clear();
        match xml.read_event_into(&mut buf).map_err(xml_error(path))? {
            Event::Start(e) if e.local_name().as_ref() == "si" => {
                let text = read_rich_text(&mut xml, "si", &mut inner, path)?;
                writer.push(&text).map_err(stored)?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    writer.finish().map_err(stored)
}

/// The text of a string item (`<si>`, `<is>`): its `<t>`, or its rich
/// text runs' `<t>`s joined, leaving out phonetic guides (`<rPh>`).
fn read_rich_text(
    xml: &mut Xml<'_>,
    closing: &str,
    buf: &mut Vec<u8>,
    path: &str,
) -> Result<String, String> {
    let mut text = String::new();
    let mut phonetic = false;
    let mut run = String::new();
    loop {
        buf.clear();
        // A `<t>` outside phonetic guides: whether it keeps its spaces.
        let preserve = match xml.read_event_into(buf).map_err(xml_error(path))? {
            Event::Start(e) => match e.local_name().as_ref() {
                "rPh" => {
                    phonetic = true;
                    continue;
                }
                "t" if !phonetic => attribute(&e, "xml:space")?.is_some_and(|v| v == "preserve"),
                _ => continue,
            },
            Event::End(e) if e.local_name().as_ref() == closing => return Ok(text),
            Event::End(e) if e.local_name().as_ref() == "rPh" => {
                phonetic = false;
                continue;
            }
            Event::Eof => return Err(format!("{path} ends inside a string")),
            _ => continue,
        };
        run.clear();
        read_text(xml, "t", buf, &mut run, path)?;
        let kept = if preserve {
            run.as_str()
        } else {
            run.trim_matches([' ', '\t', '\r', '\n'])
        };
        text.push_str(&unescape_ooxml(kept));
    }
}

/// The character data of an element up to its end tag, XML escapes
/// resolved, appended to `out`.
fn read_text(
    xml: &mut Xml<'_>,
    closing: &str,
    buf: &mut Vec<u8>,
    out: &mut String,
    path: &str,
) -> Result<(), String> {
    loop {
        buf.clear();
        match xml.read_event_into(buf).map_err(xml_error(path))? {
            Event::Text(text) => out.push_str(&text.xml10_content()),
            Event::CData(text) => out.push_str(&text.xml10_content()),
            Event::GeneralRef(reference) => {
                if let Some(entity) = quick_xml::escape::resolve_xml_entity(&reference) {
                    out.push_str(entity);
                } else if let Ok(Some(c)) = reference.resolve_char_ref() {
                    out.push(c);
                } else {
                    return Err(format!("{path} has the unknown entity &{};", &*reference));
                }
            }
            Event::End(e) if e.local_name().as_ref() == closing => return Ok(()),
            Event::Eof => return Err(format!("{path} ends inside <{closing}>")),
            _ => {}
        }
    }
}

/// Text with Office's `_xHHHH_` escapes (UTF-16 code units, for characters
/// XML cannot hold, such as a carriage return) turned back into characters.
fn unescape_ooxml(text: &str) -> Cow<'_, str> {
    let escape_at = |at: usize| -> Option<u16> {
        let bytes = text.as_bytes().get(at..at + 7)?;
        if bytes[0] != b'_' || bytes[1] != b'x' || bytes[6] != b'_' {
            return None;
        }
        u16::from_str_radix(text.get(at + 2..at + 6)?, 16).ok()
    };
    if !text.contains("_x") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut units = Vec::new();
    let mut at = 0;
    while at < text.len() {
        if let Some(unit) = escape_at(at) {
            units.push(unit);
            at += 7;
            continue;
        }
        out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{FFFD}')));
        let c = text[at..].chars().next().unwrap_or('\u{FFFD}');
        out.push(c);
        at += c.len_utf8();
    }
    out.extend(char::decode_utf16(units).map(|c| c.unwrap_or('\u{FFFD}')));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const WORKBOOK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="Hidden" sheetId="1" state="hidden" r:id="rId1"/><sheet name="Shots &amp; takes" sheetId="2" r:id="rId2"/></sheets></workbook>"#;

    const STYLES: &str = r#"<styleSheet><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd"/></numFmts>
<cellStyleXfs count="1"><xf numFmtId="14"/></cellStyleXfs>
<cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164"/><xf numFmtId="46"/></cellXfs></styleSheet>"#;

    /// A package with two sheets (the first hidden), the given shared
    /// strings (`<si>` items) and second sheet's cells (`<row>`s).
    fn package(strings: &str, rows: &str) -> tempfile::NamedTempFile {
        let relations = r#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="/xl/worksheets/sheet2.xml"/><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#;
        let root = r#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
        let sheet = |rows: &str| {
            format!("<worksheet><dimension ref=\"A1\"/><sheetData>{rows}</sheetData></worksheet>")
        };
        let strings = format!("<sst>{strings}</sst>");
        let parts = [
            ("_rels/.rels", root.to_owned()),
            ("xl/workbook.xml", WORKBOOK.to_owned()),
            ("xl/_rels/workbook.xml.rels", relations.to_owned()),
            ("xl/styles.xml", STYLES.to_owned()),
            ("xl/sharedStrings.xml", strings),
            ("xl/worksheets/sheet1.xml", sheet("")),
            ("xl/worksheets/sheet2.xml", sheet(rows)),
        ];
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        let options = zip::write::SimpleFileOptions::default();
        for (name, text) in parts {
            zip.start_file(name, options).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        file
    }

    fn read_cells(strings: &str, rows: &str) -> Result<Vec<XlsxCell>, String> {
        let file = package(strings, rows);
        let mut workbook = XlsxWorkbook::open(file.path())?;
        let mut cells = workbook.cells("Shots & takes")?;
        let mut all = Vec::new();
        while let Some(cell) = cells.next_cell()? {
            all.push(cell);
        }
        Ok(all)
    }

    fn values(cells: &[XlsxCell]) -> Vec<Data> {
        cells.iter().map(|cell| cell.value.clone()).collect()
    }

    #[test]
    fn the_sheet_list_keeps_names_states_and_parts() {
        let file = package("", "");
        let workbook = XlsxWorkbook::open(file.path()).unwrap();
        let names: Vec<_> = workbook
            .sheets
            .iter()
            .map(|s| (&*s.name, s.visible))
            .collect();
        assert_eq!(names, [("Hidden", false), ("Shots & takes", true)]);
        assert_eq!(
            workbook.paths,
            ["xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"]
        );
        assert_eq!(
            workbook.styles,
            [NumberKind::Plain, NumberKind::Date, NumberKind::Duration]
        );
    }

    #[test]
    fn shared_strings_are_resolved_by_position() {
        let strings = "<si><t>zero</t></si><si><t>one</t></si><si><t/></si><si><t>three</t></si>";
        let rows = r#"<row r="2"><c r="B2" t="s"><v>3</v></c><c t="s"><v>0</v></c></row>
<row><c t="s"><v>1</v></c><c r="D3" t="s"><v>2</v></c></row>"#;
        let cells = read_cells(strings, rows).unwrap();
        let positions: Vec<_> = cells.iter().map(|cell| cell.position).collect();
        assert_eq!(positions, [(1, 1), (1, 2), (2, 0), (2, 3)]);
        assert_eq!(
            values(&cells),
            ["three", "zero", "one", ""].map(|text| Data::String(text.to_owned()))
        );
    }

    #[test]
    fn rich_text_runs_join_without_phonetic_guides() {
        let strings = r#"<si><r><rPr><b/></rPr><t>Café </t></r><r><t xml:space="preserve"> crème &amp; pain_x000D_</t></r><rPh sb="0" eb="1"><t>カフェ</t></rPh></si>"#;
        let rows = r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><r><t>in</t></r><r><t xml:space="preserve">line </t></r></is></c></row>"#;
        let cells = read_cells(strings, rows).unwrap();
        assert_eq!(
            values(&cells),
            [
                Data::String("Café crème & pain\r".to_owned()),
                Data::String("inline ".to_owned())
            ]
        );
    }

    #[test]
    fn cells_read_by_type_style_and_formula() {
        let rows = r#"<row r="1"><c r="A1"><v>5</v></c><c r="B1" t="b"><v>1</v></c><c r="C1" t="e"><f>1/0</f><v>#DIV/0!</v></c>
<c r="D1" s="1"><v>45943</v></c><c r="E1" s="2"><v>1.5</v></c><c r="F1" t="str"><f>A1&amp;"x"</f><v>5x</v></c>
<c r="G1"><f t="shared" si="0"/></c><c r="H1" t="d"><v>2026-11-26</v></c><c r="I1" s="1"/><c r="J1"><v>abc</v></c></row>"#;
        let cells = read_cells("", rows).unwrap();
        let formulas: Vec<_> = cells.iter().map(|cell| cell.formula).collect();
        assert_eq!(
            formulas,
            [
                false, false, true, false, false, true, true, false, false, false
            ]
        );
        let date = ExcelDateTime::new(45943.0, ExcelDateTimeType::DateTime, false);
        let span = ExcelDateTime::new(1.5, ExcelDateTimeType::TimeDelta, false);
        assert_eq!(
            values(&cells),
            [
                Data::Float(5.0),
                Data::Bool(true),
                Data::Error(CellErrorType::Div0),
                Data::DateTime(date),
                Data::DateTime(span),
                Data::String("5x".to_owned()),
                Data::Empty,
                Data::DateTimeIso("2026-11-26".to_owned()),
                Data::Empty,
                Data::String("abc".to_owned()),
            ]
        );
    }

    #[test]
    fn a_string_table_larger_than_any_buffer_is_read_back_in_any_order() {
        // ~2 MB of distinct strings: larger than the writer's buffer, the
        // XML reader's, and many blocks of the table.
        let count = 20_000;
        let text = |n: usize| format!("prompt {n}{}", "ü".repeat(n % 50));
        let strings: String = (0..count)
            .map(|n| format!("<si><t>{}</t></si>", text(n)))
            .collect();
        let rows: String = (0..count)
            .map(|row| {
                let index = (row * 7919) % count; // every index once, scattered
                format!(
                    "<row r=\"{}\"><c r=\"A{}\" t=\"s\"><v>{index}</v></c></row>",
                    row + 1,
                    row + 1
                )
            })
            .collect();
        let cells = read_cells(&strings, &rows).unwrap();
        assert_eq!(cells.len(), count);
        for (row, cell) in cells.iter().enumerate() {
            assert_eq!(cell.value, Data::String(text((row * 7919) % count)));
        }
    }

    #[test]
    fn malformed_workbooks_give_errors_not_panics() {
        let strings = "<si><t>zero</t></si>";
        for (rows, expected) in [
            (
                r#"<row><c t="s"><v>1</v></c></row>"#,
                "the table has 1 strings",
            ),
            (r#"<row><c t="s"><v>x</v></c></row>"#, "is not a number"),
            (r#"<row><c r="1A"><v>1</v></c></row>"#, "not like A1"),
            (r#"<row><c r="A0"><v>1</v></c></row>"#, "not like A1"),
            (
                r#"<row><c r="ZZZZZZZZZ1"><v>1</v></c></row>"#,
                "not like A1",
            ),
            (r#"<row><c t="b"><v>yes</v></c></row>"#, "boolean"),
            (
                r#"<row><c t="e"><v>#OOPS</v></c></row>"#,
                "not one Excel has",
            ),
            (r#"<row><c t="q"><v>1</v></c></row>"#, "unknown type"),
            (r#"<row><c t="n"><v>one</v></c></row>"#, "number cell"),
            (r#"<row><c><v>&bogus;</v></c></row>"#, "entity"),
        ] {
            let error = read_cells(strings, rows).err().unwrap_or_default();
            assert!(error.contains(expected), "{rows}: {error:?}");
        }
        let not_a_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_a_zip.path(), b"Image URL,Prompt\n").unwrap();
        let error = XlsxWorkbook::open(not_a_zip.path())
            .err()
            .unwrap_or_default();
        assert!(error.contains("not a readable .xlsx package"), "{error}");
    }

    #[test]
    fn a_sheet_cut_anywhere_ends_in_an_error() {
        let sheet = r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><t>x &amp; y</t></is></c><c r="C1"><f>1</f><v>2</v></c></row>"#;
        for cut in 0..sheet.len() {
            // The sheet part ends inside its data: every cut must say so.
            let rows = sheet.get(..cut).unwrap_or_default();
            let result = read_truncated("<si><t>zero</t></si>", rows);
            assert!(
                result.is_err(),
                "cut at {cut} read as {:?}",
                result.map(|c| values(&c))
            );
        }
    }

    /// Reads a second sheet whose part stops after `rows` (no closing tags).
    fn read_truncated(strings: &str, rows: &str) -> Result<Vec<XlsxCell>, String> {
        let file = package(strings, "");
        let mut zip = ZipArchive::new(File::open(file.path()).unwrap()).unwrap();
        let copy = tempfile::NamedTempFile::new().unwrap();
        let mut out = zip::ZipWriter::new(copy.reopen().unwrap());
        for index in 0..zip.len() {
            let entry = zip.by_index(index).unwrap();
            let name = entry.name().unwrap().into_owned();
            drop(entry);
            if name == "xl/worksheets/sheet2.xml" {
                out.start_file(name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                out.write_all(format!("<worksheet><sheetData>{rows}").as_bytes())
                    .unwrap();
            } else {
                out.raw_copy_file(zip.by_index(index).unwrap()).unwrap();
            }
        }
        out.finish().unwrap();
        let mut workbook = XlsxWorkbook::open(copy.path())?;
        let mut cells = workbook.cells("Shots & takes")?;
        let mut all = Vec::new();
        while let Some(cell) = cells.next_cell()? {
            all.push(cell);
        }
        Ok(all)
    }

    #[test]
    fn number_formats_show_dates_and_durations() {
        assert_eq!(custom_format_kind("yyyy-mm-dd"), NumberKind::Date);
        assert_eq!(custom_format_kind("[h]:mm:ss"), NumberKind::Duration);
        assert_eq!(custom_format_kind("0.00"), NumberKind::Plain);
        assert_eq!(custom_format_kind("\"days\" 0"), NumberKind::Plain);
        assert_eq!(custom_format_kind("[Red]0.0"), NumberKind::Plain);
        assert_eq!(builtin_format_kind("14"), NumberKind::Date);
        assert_eq!(builtin_format_kind("46"), NumberKind::Duration);
        assert_eq!(builtin_format_kind("2"), NumberKind::Plain);
    }

    #[test]
    fn office_escapes_become_characters() {
        assert_eq!(unescape_ooxml("a_x000D_b"), "a\rb");
        assert_eq!(unescape_ooxml("_xD83D__xDCF7_"), "📷");
        assert_eq!(unescape_ooxml("_xD83D_ lone"), "\u{FFFD} lone");
        assert_eq!(unescape_ooxml("_x00_ é_x"), "_x00_ é_x");
        assert_eq!(resolve("xl/workbook.xml", "../docs/a.xml"), "docs/a.xml");
        assert_eq!(
            resolve("xl/workbook.xml", "/xl/worksheets/s.xml"),
            "xl/worksheets/s.xml"
        );
    }
}
