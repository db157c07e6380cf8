//! How a command's answer is shown: every command returns one [`View`], whose serde form is the
//! `--json` document and whose text form is laid out from the same fields by the renderers here
//! (aligned tables whose headers are the JSON field names), so a field has one name in both.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

/// What a command printed.
pub struct Output {
    /// For people.
    pub text: String,
    /// For scripts (`--json`).
    pub json: Value,
}

impl Output {
    /// Both forms of `view`.
    pub fn of(view: &impl View) -> Result<Self> {
        Ok(Self { text: view.text(), json: serde_json::to_value(view)? })
    }
}

/// A command's answer. Its `Serialize` form is the `--json` output; [`View::text`] is the text
/// output, built from the same fields (with [`rows`] and [`fields`] where it is a table).
pub trait View: Serialize {
    /// The text for people.
    fn text(&self) -> String;
}

/// One column of a text table: the JSON field it shows, which is also its header, and how its
/// cells are written. A column that shows a value in other units than the field drops the
/// unit from its header (`uptime_ms` shown as `1d 2h 3m` is headed `uptime`).
pub struct Col<T> {
    field: &'static str,
    show: Show<T>,
    /// Left out of the table when every cell is empty.
    omit_empty: bool,
}

// By hand: derived they would ask `T: Clone`.
impl<T> Clone for Col<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Col<T> {}

enum Show<T> {
    /// As it is: strings bare, numbers in decimal, arrays joined with `,`, null as `-`.
    Plain,
    /// Like `Plain`, with an empty string as `-`.
    Dash,
    /// A string in double quotes (escaped record values).
    Quoted,
    /// A duration in ms, as `1d 2h 3m`.
    Uptime,
    /// A Unix time in ms, as `5s ago` or `in 600s`.
    Ago,
    /// A percentage, as `50%`.
    Percent,
    /// Derived from the whole row, under the header given.
    Derived(&'static str, fn(&T) -> String),
}

impl<T> Clone for Show<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Show<T> {}

impl<T> Col<T> {
    /// The field as it is (null as `-`).
    pub const fn plain(field: &'static str) -> Self {
        Self { field, show: Show::Plain, omit_empty: false }
    }

    /// The field, an empty string shown as `-`.
    pub const fn dash(field: &'static str) -> Self {
        Self { field, show: Show::Dash, omit_empty: false }
    }

    /// The field in double quotes.
    pub const fn quoted(field: &'static str) -> Self {
        Self { field, show: Show::Quoted, omit_empty: false }
    }

    /// A duration field in ms (`*_ms`), as `1d 2h 3m`; 0 (unknown) as `-`.
    pub const fn uptime(field: &'static str) -> Self {
        Self { field, show: Show::Uptime, omit_empty: false }
    }

    /// A Unix-time field in ms (`*_ms`), relative to now; 0 (none) as `-`.
    pub const fn ago(field: &'static str) -> Self {
        Self { field, show: Show::Ago, omit_empty: false }
    }

    /// A percentage field (`*_percent`), as `N%`.
    pub const fn percent(field: &'static str) -> Self {
        Self { field, show: Show::Percent, omit_empty: false }
    }

    /// A text-only column computed from the whole row (a summary of several fields).
    pub const fn derived(header: &'static str, cell: fn(&T) -> String) -> Self {
        Self { field: header, show: Show::Derived(header, cell), omit_empty: false }
    }

    /// This column, left out when no row has anything in it.
    pub const fn omit_empty(self) -> Self {
        Self { omit_empty: true, ..self }
    }

    fn header(&self) -> &'static str {
        let strip = |suffix| self.field.strip_suffix(suffix).unwrap_or(self.field);
        match self.show {
            Show::Uptime | Show::Ago => strip("_ms"),
            Show::Percent => strip("_percent"),
            Show::Derived(header, _) => header,
            Show::Plain | Show::Dash | Show::Quoted => self.field,
        }
    }

    fn cell(&self, item: &T, row: &Value) -> String {
        let v = &row[self.field];
        match self.show {
            Show::Plain => plain(v),
            Show::Dash => match v.as_str() {
                Some("") => "-".into(),
                _ => plain(v),
            },
            Show::Quoted => format!("\"{}\"", plain(v)),
            Show::Uptime => uptime(v.as_u64().unwrap_or(0)),
            Show::Ago => ms_to_time(v.as_u64().unwrap_or(0)),
            Show::Percent => format!("{}%", plain(v)),
            Show::Derived(_, cell) => cell(item),
        }
    }
}

/// A JSON value as a table cell: strings bare, arrays joined with `,`, null as `-`.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `items` as a table with `cols`, one row per item.
pub fn rows<T: Serialize>(items: &[T], cols: &[Col<T>]) -> String {
    let mut cells: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let v = serde_json::to_value(item).unwrap_or(Value::Null);
            cols.iter().map(|c| c.cell(item, &v)).collect()
        })
        .collect();
    let mut headers: Vec<&str> = cols.iter().map(Col::header).collect();
    for i in (0..cols.len()).rev() {
        if cols[i].omit_empty && cells.iter().all(|r| r[i].is_empty()) {
            headers.remove(i);
            cells.iter_mut().for_each(|r| drop(r.remove(i)));
        }
    }
    table(&headers, &cells)
}

/// The fields `cols` of `item` as a `name value` table, one row per field.
pub fn fields<T: Serialize>(item: &T, cols: &[Col<T>]) -> String {
    let v = serde_json::to_value(item).unwrap_or(Value::Null);
    let cells: Vec<Vec<String>> = cols.iter().map(|c| vec![c.header().to_string(), c.cell(item, &v)]).collect();
    table(&["name", "value"], &cells)
}

/// A map as a two-column table under `headers`.
pub fn map_rows(headers: [&str; 2], map: &BTreeMap<String, String>) -> String {
    let cells: Vec<Vec<String>> = map.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    table(&headers, &cells)
}

/// The widest cell a table shows, in characters; a longer one is cut with a marker that says
/// how long it was (`--json` shows every value whole).
pub const MAX_CELL_CHARS: usize = 1024;

/// `cell` cut to [`MAX_CELL_CHARS`], with a marker when cut.
fn fit(cell: &str) -> std::borrow::Cow<'_, str> {
    let len = cell.chars().count();
    if len <= MAX_CELL_CHARS {
        return cell.into();
    }
    let kept: String = cell.chars().take(MAX_CELL_CHARS).collect();
    format!("{kept}...({len} chars; --json shows it whole)").into()
}

/// Formats rows as an aligned table under `headers`. Cells are padded by hand: `format!`'s
/// width is capped at 65,535 and panics beyond it.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<std::borrow::Cow<'_, str>>> = rows.iter().map(|r| r.iter().map(|c| fit(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(c);
            text.extend(std::iter::repeat_n(' ', w.saturating_sub(c.chars().count())));
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(headers.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(|c| c.as_ref()).collect(), &mut out);
    }
    out.trim_end().to_string()
}

/// A Unix time in ms relative to now: `5s ago`, `in 600s`; 0 (none) → `-`.
pub fn ms_to_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let now = wingkv_common::time::unix_secs();
    if secs > now {
        format!("in {}s", secs - now)
    } else {
        format!("{}s ago", now - secs)
    }
}

/// `93784000` → `1d 2h 3m`; 0 (unknown) → `-`.
pub fn uptime(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: &'static str,
        uptime_ms: u64,
        members: Vec<&'static str>,
        primary: Option<&'static str>,
        note: &'static str,
    }

    #[test]
    fn columns_are_headed_by_their_fields() {
        let items = [
            Row { name: "a", uptime_ms: 93_784_000, members: vec!["x", "y"], primary: None, note: "" },
            Row { name: "bb", uptime_ms: 0, members: vec![], primary: Some("x"), note: "" },
        ];
        let cols = [
            Col::plain("name"),
            Col::uptime("uptime_ms"),
            Col::plain("members"),
            Col::plain("primary"),
            Col::plain("note").omit_empty(),
        ];
        assert_eq!(
            rows(&items, &cols),
            "name  uptime    members  primary\na     1d 2h 3m  x,y      -\nbb    -                  x"
        );
        assert_eq!(fields(&items[0], &cols[..2]), "name    value\nname    a\nuptime  1d 2h 3m");
    }

    #[test]
    fn derived_and_percent_cells() {
        let row = json!({"p": 7, "a": 1, "b": 2});
        let cols = [Col::percent("p"), Col::derived("sum", |r: &Value| (r["a"].as_u64().unwrap_or(0) + 2).to_string())];
        assert_eq!(rows(&[row], &cols), "p   sum\n7%  3");
        assert_eq!(plain(&json!(null)), "-");
        assert_eq!(uptime(61_000), "1m 1s");
    }

    #[test]
    fn a_cell_wider_than_any_format_width_is_cut_not_a_panic() {
        let wide = "x".repeat(70_000);
        let text = table(&["k", "v"], &[vec!["a".into(), wide.clone()], vec!["b".into(), "short".into()]]);
        let first = text.lines().nth(1).unwrap_or_default();
        assert!(first.starts_with(&format!("a  {}", "x".repeat(MAX_CELL_CHARS))), "{first}");
        assert!(first.ends_with("...(70000 chars; --json shows it whole)"), "{first}");
        assert_eq!(text.lines().nth(2), Some("b  short"));
    }
}
