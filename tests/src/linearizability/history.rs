//! What a fault-injection test records: operations of clients on keys, each with its invoke
//! time and, when the client learned it, its completion time and result.

use anyhow::{bail, Result};

/// An operation on one key's register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Reads the value.
    Get,
    /// Sets the value.
    Set(Vec<u8>),
    /// Removes the value.
    Del,
    /// Sets `new` if the value equals `expected` (`None`: the value does not exist).
    Cas {
        /// The value required for the write (`None`: absent).
        expected: Option<Vec<u8>>,
        /// The value written when the check passes.
        new: Vec<u8>,
    },
}

/// The result of a completed operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// What a `Get` read (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A `Set` or `Del` was acknowledged.
    Done,
    /// Whether a `Cas` wrote.
    Cas(bool),
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client that ran it (for reports only: the checker does not need clients to be
    /// sequential).
    pub client: usize,
    /// The key it touched.
    pub key: String,
    /// The operation and its inputs.
    pub op: Op,
    /// When it was invoked, in any monotonic unit shared by all clients.
    pub invoke: u64,
    /// When it completed and what it returned; `None` when the outcome is unknown (it may take
    /// effect at any time after `invoke`, or never). A completion earlier than `invoke` counts
    /// as a completion at `invoke`.
    pub complete: Option<(u64, OpResult)>,
}

/// A recorded history: operations of all clients on all keys, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations.
    pub events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a whole event.
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Records the invocation of `op` on `key` by `client` at `time`, outcome unknown until
    /// [`History::complete`]; returns its id for that call.
    pub fn invoke(&mut self, client: usize, key: impl Into<String>, op: Op, time: u64) -> usize {
        self.events.push(Event { client, key: key.into(), op, invoke: time, complete: None });
        self.events.len() - 1
    }

    /// Records that operation `id` (from [`History::invoke`]) completed at `time` with `result`.
    pub fn complete(&mut self, id: usize, time: u64, result: OpResult) -> Result<()> {
        let Some(event) = self.events.get_mut(id) else {
            bail!("no operation {id} in a history of {} operations", self.events.len());
        };
        if event.complete.is_some() {
            bail!("operation {id} already completed");
        }
        event.complete = Some((time, result));
        Ok(())
    }
}

/// The value an event shows it read: a get's value, or the expected value of a cas that wrote.
pub(super) fn read_of(e: &Event) -> Option<&[u8]> {
    match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
        (Op::Get, Some(OpResult::Value(Some(v)))) => Some(v),
        (Op::Cas { expected: Some(x), .. }, Some(OpResult::Cas(true))) => Some(x),
        _ => None,
    }
}

/// The value an event may have written (not a del's absence).
pub(super) fn write_of(e: &Event) -> Option<&[u8]> {
    match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
        (Op::Set(v), _) => Some(v),
        (Op::Cas { .. }, Some(OpResult::Cas(false))) => None,
        (Op::Cas { new, .. }, _) => Some(new),
        _ => None,
    }
}

/// Whether an event cannot change the register: a get, or a cas that did not write.
pub(super) fn read_only(e: &Event) -> bool {
    matches!((&e.op, e.complete.as_ref().map(|(_, r)| r)), (Op::Get, _) | (Op::Cas { .. }, Some(OpResult::Cas(false))))
}
