//! The data commands on the table in use: single records (`set`, `get`, `del`, `exist`, `ttl`,
//! `incr`, `check_and_set`), one hash key's sort keys (`multi_*`, `sortkey_count`) and scans
//! (`hash_scan`, `full_scan`, `count_data`). Keys and values are typed and printed in the
//! escaped form of [`super::escape`].

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use wingkv_client::{CheckType, Record, ScanOptions, Table, Ttl};

use super::commands::Cmd;
use super::escape::{escape, unescape};
use super::format::{rows, Col, Output, View};

/// The bytes a typed (escaped) key or value stands for.
fn arg(s: &str) -> Result<Bytes> {
    unescape(s).map(Bytes::from).map_err(|e| anyhow!(e))
}

/// A TTL argument: none or 0 is no TTL.
fn ttl(seconds: Option<u32>) -> Option<Duration> {
    seconds.filter(|s| *s > 0).map(|s| Duration::from_secs(u64::from(s)))
}

fn check_type(name: &str) -> Result<CheckType> {
    let wire = format!("CT_{}", name.trim().to_ascii_uppercase());
    CheckType::from_str_name(&wire).ok_or_else(|| {
        anyhow!("unknown check type '{name}' (e.g. value_not_exist, value_exist, value_match_prefix, value_bytes_equal, value_int_less)")
    })
}

/// `set`, `del`: done.
#[derive(Serialize)]
struct OkView {
    ok: bool,
}

impl View for OkView {
    fn text(&self) -> String {
        "OK".into()
    }
}

/// `get`: the value, when the record exists.
#[derive(Serialize)]
struct GetView {
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

impl View for GetView {
    fn text(&self) -> String {
        match &self.value {
            Some(v) => format!("\"{v}\""),
            None => "Not found".into(),
        }
    }
}

/// `exist`.
#[derive(Serialize)]
struct ExistView {
    exist: bool,
}

impl View for ExistView {
    fn text(&self) -> String {
        if self.exist { "True" } else { "False" }.into()
    }
}

/// `ttl`: the seconds left, `null` for a record that never expires, absent when there is no
/// record.
#[derive(Serialize)]
struct TtlView {
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<Option<u32>>,
}

impl View for TtlView {
    fn text(&self) -> String {
        match self.ttl_seconds {
            None => "Not found".into(),
            Some(None) => "Infinite".into(),
            Some(Some(s)) => s.to_string(),
        }
    }
}

/// `incr`: the value after the increment.
#[derive(Serialize)]
struct IncrView {
    new_value: i64,
}

impl View for IncrView {
    fn text(&self) -> String {
        self.new_value.to_string()
    }
}

/// `check_and_set`: whether the check passed (and the value was set), and the checked value.
#[derive(Serialize)]
struct CheckAndSetView {
    set: bool,
    check_value: Option<String>,
    /// The text shows the checked value only when asked (`-r`).
    #[serde(skip)]
    return_check_value: bool,
}

impl View for CheckAndSetView {
    fn text(&self) -> String {
        let mut text = if self.set { "set succeed".to_string() } else { "set failed: check not passed".to_string() };
        if self.return_check_value {
            match &self.check_value {
                Some(v) => text.push_str(&format!("\ncheck value: \"{v}\"")),
                None => text.push_str("\ncheck value: not found"),
            }
        }
        text
    }
}

/// `multi_set`: how many records were set.
#[derive(Serialize)]
struct MultiSetView {
    ok: bool,
    count: usize,
}

impl View for MultiSetView {
    fn text(&self) -> String {
        format!("OK ({} records)", self.count)
    }
}

/// `multi_del`: how many records were deleted.
#[derive(Serialize)]
struct MultiDelView {
    deleted: u64,
}

impl View for MultiDelView {
    fn text(&self) -> String {
        format!("OK ({} deleted)", self.deleted)
    }
}

/// `sortkey_count`, `count_data`: a count.
#[derive(Serialize)]
struct CountView {
    count: u64,
    /// What the text puts after the number.
    #[serde(skip)]
    unit: &'static str,
}

impl View for CountView {
    fn text(&self) -> String {
        format!("{}{}", self.count, self.unit)
    }
}

/// One record of a read or scan, escaped.
#[derive(Serialize)]
struct RecordView {
    hash_key: String,
    sort_key: String,
    value: String,
}

/// `multi_get`, `hash_scan`, `full_scan`: records.
#[derive(Serialize)]
struct RecordsView {
    /// The hash key read (`multi_get` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_key: Option<String>,
    records: Vec<RecordView>,
    count: usize,
}

impl RecordsView {
    fn new(hash_key: Option<String>, records: Vec<RecordView>) -> Self {
        Self { hash_key, count: records.len(), records }
    }
}

impl View for RecordsView {
    fn text(&self) -> String {
        let table = rows(&self.records, &[Col::plain("hash_key"), Col::plain("sort_key"), Col::quoted("value")]);
        format!("{table}\n\n{} records", self.count)
    }
}

/// Runs the data command `cmd` on `t`.
pub async fn run(t: &Table, cmd: Cmd) -> Result<Output> {
    match cmd {
        Cmd::Set { hash_key, sort_key, value, ttl_seconds } => {
            t.set_with_ttl(arg(&hash_key)?, arg(&sort_key)?, arg(&value)?, ttl(ttl_seconds)).await?;
            Output::of(&OkView { ok: true })
        }
        Cmd::Get { hash_key, sort_key } => {
            let value = t.get(arg(&hash_key)?, arg(&sort_key)?).await?;
            Output::of(&GetView { found: value.is_some(), value: value.map(|v| escape(&v)) })
        }
        Cmd::Del { hash_key, sort_key } => {
            t.del(arg(&hash_key)?, arg(&sort_key)?).await?;
            Output::of(&OkView { ok: true })
        }
        Cmd::Exist { hash_key, sort_key } => {
            Output::of(&ExistView { exist: t.exist(arg(&hash_key)?, arg(&sort_key)?).await? })
        }
        Cmd::Ttl { hash_key, sort_key } => {
            let ttl = t.ttl(arg(&hash_key)?, arg(&sort_key)?).await?;
            let ttl_seconds = ttl.map(|t| match t {
                Ttl::Infinite => None,
                Ttl::Seconds(s) => Some(s),
            });
            Output::of(&TtlView { found: ttl_seconds.is_some(), ttl_seconds })
        }
        Cmd::Incr { hash_key, sort_key, increment } => {
            Output::of(&IncrView { new_value: t.incr(arg(&hash_key)?, arg(&sort_key)?, increment).await? })
        }
        Cmd::CheckAndSet {
            hash_key,
            check_sort_key,
            check_type: ct,
            check_operand,
            set_sort_key,
            set_value,
            ttl_seconds,
            return_check_value,
        } => {
            let ct = check_type(&ct)?;
            let csk = arg(&check_sort_key)?;
            let ssk = match set_sort_key {
                Some(s) => arg(&s)?,
                None => csk.clone(),
            };
            let r = t
                .check_and_set(arg(&hash_key)?, csk, ct, arg(&check_operand)?, ssk, arg(&set_value)?, ttl(ttl_seconds))
                .await?;
            Output::of(&CheckAndSetView {
                set: r.set,
                check_value: r.check_value.as_deref().map(escape),
                return_check_value,
            })
        }
        Cmd::MultiSet { hash_key, pairs } => {
            if pairs.len() % 2 != 0 {
                bail!("multi_set needs sort key and value pairs; got {} words after the hash key", pairs.len());
            }
            let kvs = pairs.chunks(2).map(|c| Ok((arg(&c[0])?, arg(&c[1])?))).collect::<Result<Vec<_>>>()?;
            let count = kvs.len();
            t.multi_set(arg(&hash_key)?, kvs, None).await?;
            Output::of(&MultiSetView { ok: true, count })
        }
        Cmd::MultiGet { hash_key, sort_keys } => {
            let sks = if sort_keys.is_empty() {
                None
            } else {
                Some(sort_keys.iter().map(|s| arg(s)).collect::<Result<Vec<_>>>()?)
            };
            let hk = arg(&hash_key)?;
            let kvs = t.multi_get(hk.clone(), sks).await?;
            let hk = escape(&hk);
            let records = kvs
                .iter()
                .map(|(k, v)| RecordView { hash_key: hk.clone(), sort_key: escape(k), value: escape(v) })
                .collect();
            Output::of(&RecordsView::new(Some(hk), records))
        }
        Cmd::MultiDel { hash_key, sort_keys } => {
            let sks = sort_keys.iter().map(|s| arg(s)).collect::<Result<Vec<_>>>()?;
            Output::of(&MultiDelView { deleted: t.multi_del(arg(&hash_key)?, sks).await? })
        }
        Cmd::SortkeyCount { hash_key } => {
            Output::of(&CountView { count: t.sortkey_count(arg(&hash_key)?).await?, unit: "" })
        }
        Cmd::HashScan { hash_key, start_sort_key, stop_sort_key, max_count, no_value } => {
            let opts = ScanOptions {
                start_sort_key: arg(&start_sort_key)?,
                stop_sort_key: arg(&stop_sort_key)?,
                limit: max_count.unwrap_or(0),
                no_value,
                ..Default::default()
            };
            Output::of(&scan(t.scan(arg(&hash_key)?, opts)).await?)
        }
        Cmd::FullScan { max_count, no_value } => {
            let opts = ScanOptions { limit: max_count.unwrap_or(0), no_value, ..Default::default() };
            Output::of(&scan(t.full_scan(opts)).await?)
        }
        Cmd::CountData => {
            let mut rows = t.full_scan(ScanOptions { no_value: true, batch_size: 5_000, ..Default::default() });
            let mut count = 0u64;
            while let Some(r) = rows.next().await {
                r?;
                count += 1;
            }
            Output::of(&CountView { count, unit: " records" })
        }
        other => bail!("'{other:?}' is not a data command"),
    }
}

/// Every record of a scan.
async fn scan(
    mut rows: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Record, wingkv_client::Error>> + Send>>,
) -> Result<RecordsView> {
    let mut records = Vec::new();
    while let Some(r) = rows.next().await {
        let r = r.context("scan failed")?;
        records.push(RecordView {
            hash_key: escape(&r.hash_key),
            sort_key: escape(&r.sort_key),
            value: escape(&r.value),
        });
    }
    Ok(RecordsView::new(None, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_types_by_pegasus_name() {
        assert!(check_type("value_exist").is_ok() && check_type(" VALUE_INT_LESS ").is_ok());
        let err = check_type("sometimes").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("unknown check type 'sometimes'"), "{err}");
        assert_eq!(ttl(Some(0)), None);
        assert_eq!(ttl(Some(5)), Some(Duration::from_secs(5)));
    }

    #[test]
    fn ttl_json_tells_missing_from_infinite() -> Result<()> {
        let json = |ttl_seconds: Option<Option<u32>>| {
            serde_json::to_string(&TtlView { found: ttl_seconds.is_some(), ttl_seconds })
        };
        assert_eq!(json(None)?, r#"{"found":false}"#);
        assert_eq!(json(Some(None))?, r#"{"found":true,"ttl_seconds":null}"#);
        assert_eq!(json(Some(Some(7)))?, r#"{"found":true,"ttl_seconds":7}"#);
        Ok(())
    }
}
