//! Rendering for people: values, operations and results, the explanation of a violation and
//! its events as a table, and the one-line report.

use std::collections::HashSet;
use std::fmt;

use super::history::{read_of, write_of, Event, Op, OpResult};
use super::search::Stuck;
use super::{Report, Verdict, Violation};

/// The explanation of a violation: the first shown event (of `shown`, indices in `events`) that
/// read a value no operation wrote, else where the longest consistent order got stuck; with a
/// note when shrinking stopped before it `finished`.
pub(super) fn explain(events: &[&Event], shown: &[usize], stuck: &Stuck, finished: bool) -> String {
    let written: HashSet<&[u8]> = events.iter().filter_map(|e| write_of(e)).collect();
    let unwritten = shown.iter().map(|&i| events[i]).find(|e| read_of(e).is_some_and(|x| !written.contains(x)));
    let mut explanation = if let Some(e) = unwritten {
        let what = if matches!(e.op, Op::Get) { "read" } else { "expected and found" };
        let value = read_of(e).map(show_bytes).unwrap_or_default();
        format!("client {}'s {} {what} {value}, which no operation on this key wrote", e.client, e.op)
    } else {
        // The end of the longest consistent order is where it goes wrong.
        const SHOWN: usize = 6;
        let order = &stuck.prefix;
        let mut prefix: Vec<String> =
            order[order.len().saturating_sub(SHOWN)..].iter().map(|&i| short(events[i])).collect();
        if order.len() > SHOWN {
            prefix.insert(0, format!("{} more...", order.len() - SHOWN));
        }
        match stuck.blocked.map(|b| events[b]) {
            Some(b) => format!(
                "no order of these {} operations respects both real time and a register: the longest \
                 consistent order [{}] cannot take client {}'s {} -> {} before it returned at {}",
                shown.len(),
                prefix.join(", "),
                b.client,
                b.op,
                show_result(b),
                b.complete.as_ref().map(|(t, _)| t.to_string()).unwrap_or_else(|| "?".into()),
            ),
            None => format!("no order of these {} operations respects both real time and a register", shown.len()),
        }
    };
    if !finished {
        explanation.push_str(" (shrinking stopped at its work bound: the events may not be minimal)");
    }
    explanation
}

/// A value for people: quoted text when printable, else hex; long values cut.
fn show_bytes(v: &[u8]) -> String {
    const MAX: usize = 40;
    let cut = &v[..v.len().min(MAX)];
    let more = if v.len() > MAX { format!("...({} bytes)", v.len()) } else { String::new() };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}{more}"),
        _ => {
            let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

fn show_value(v: Option<&[u8]>) -> String {
    v.map(show_bytes).unwrap_or_else(|| "nil".into())
}

fn show_result(e: &Event) -> String {
    e.complete.as_ref().map(|(_, r)| r.to_string()).unwrap_or_else(|| "unknown".into())
}

/// "c1 get -> nil": an event in a list.
fn short(e: &Event) -> String {
    format!("c{} {} -> {}", e.client, e.op, show_result(e))
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => write!(f, "get"),
            Op::Set(v) => write!(f, "set({})", show_bytes(v)),
            Op::Del => write!(f, "del"),
            Op::Cas { expected, new } => write!(f, "cas({} -> {})", show_value(expected.as_deref()), show_bytes(new)),
        }
    }
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Value(v) => write!(f, "{}", show_value(v.as_deref())),
            OpResult::Done => write!(f, "ok"),
            OpResult::Cas(set) => write!(f, "{set}"),
        }
    }
}

impl fmt::Display for Violation {
    /// The key, the explanation, then the events as a table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable: {}", self.key, self.explanation)?;
        let header = ["client", "op", "result", "invoke", "complete"];
        let rows: Vec<[String; 5]> = self
            .minimal
            .iter()
            .map(|e| {
                [
                    e.client.to_string(),
                    e.op.to_string(),
                    show_result(e),
                    e.invoke.to_string(),
                    e.complete.as_ref().map(|(t, _)| t.to_string()).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 5]| -> fmt::Result {
            // Text columns left-aligned, numbers right-aligned.
            writeln!(
                f,
                "  {:>w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            )
        };
        line(f, header)?;
        for row in &rows {
            line(f, [&row[0], &row[1], &row[2], &row[3], &row[4]])?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    /// One line for a linearizable or unknown verdict; the violation's table otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = format!("{} keys, {} ops, {} search states", self.keys, self.ops, self.states);
        match &self.verdict {
            Verdict::Ok => write!(f, "linearizable ({size})"),
            Verdict::Unknown => {
                write!(f, "unknown: the search budget ran out on keys {:?} ({size})", self.unknown_keys)
            }
            Verdict::Violation(v) => write!(f, "NOT linearizable ({size})\n{v}"),
        }
    }
}
