//! The checker's unit tests: hand-written histories that must pass or be rejected, generated
//! ones (valid, then perturbed), and agreement with a brute-force search on small ones.

use super::*;

use std::time::Instant;

const BUDGET: usize = 1_000_000;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn set(v: &str) -> Op {
    Op::Set(b(v))
}

fn cas(expected: Option<&str>, new: &str) -> Op {
    Op::Cas { expected: expected.map(b), new: b(new) }
}

fn val(v: Option<&str>) -> OpResult {
    OpResult::Value(v.map(b))
}

/// A completed operation on key "k".
fn done(client: usize, op: Op, invoke: u64, complete: u64, result: OpResult) -> Event {
    Event { client, key: "k".into(), op, invoke, complete: Some((complete, result)) }
}

/// An operation of unknown outcome on key "k".
fn lost(client: usize, op: Op, invoke: u64) -> Event {
    Event { client, key: "k".into(), op, invoke, complete: None }
}

fn assert_ok(events: Vec<Event>) {
    let report = check(&History { events }, BUDGET);
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
}

fn violation(events: Vec<Event>) -> Violation {
    let report = check(&History { events }, BUDGET);
    match report.verdict {
        Verdict::Violation(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn sequential_valid_histories_pass() {
    assert_ok(vec![]);
    assert_ok(vec![
        done(0, Op::Get, 0, 1, val(None)),
        done(0, set("a"), 2, 3, OpResult::Done),
        done(1, Op::Get, 4, 5, val(Some("a"))),
        done(1, cas(Some("a"), "b"), 6, 7, OpResult::Cas(true)),
        done(0, cas(Some("a"), "c"), 8, 9, OpResult::Cas(false)),
        done(0, Op::Get, 10, 11, val(Some("b"))),
        done(1, Op::Del, 12, 13, OpResult::Done),
        done(1, Op::Get, 14, 15, val(None)),
        done(0, cas(None, "d"), 16, 17, OpResult::Cas(true)),
        done(0, Op::Get, 18, 19, val(Some("d"))),
    ]);
}

#[test]
fn sequential_read_of_never_written_value_fails() {
    let v = violation(vec![done(0, set("a"), 0, 1, OpResult::Done), done(1, Op::Get, 2, 3, val(Some("zzz")))]);
    assert_eq!(v.minimal.len(), 1, "{v}");
    assert!(v.explanation.contains("no operation on this key wrote"), "{v}");
}

#[test]
fn sequential_stale_read_after_write_fails() {
    let events = vec![
        done(0, set("a"), 0, 1, OpResult::Done),
        done(0, set("b"), 2, 3, OpResult::Done),
        done(1, Op::Get, 4, 5, val(Some("a"))),
    ];
    let v = violation(events.clone());
    // Every event is needed: without the first set the read would be of a never-written
    // value, without the second it would be fresh.
    assert_eq!(v.minimal, events, "{v}");
    let table = v.to_string();
    assert!(table.contains("client") && table.contains("set(\"b\")") && table.contains("\"a\""), "{table}");
    // A stale absence too: a read of nil after an acknowledged write.
    violation(vec![done(0, set("a"), 0, 1, OpResult::Done), done(1, Op::Get, 2, 3, val(None))]);
}

#[test]
fn read_overlapping_a_write_may_see_either_value() {
    for seen in [Some("a"), Some("b")] {
        assert_ok(vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            done(0, set("b"), 20, 40, OpResult::Done),
            done(1, Op::Get, 25, 30, val(seen)),
        ]);
    }
    // Touching intervals (a return and a call at the same instant) count as overlapping.
    assert_ok(vec![done(0, set("a"), 0, 10, OpResult::Done), done(1, Op::Get, 10, 12, val(None))]);
}

#[test]
fn new_then_old_value_reads_fail() {
    let events = vec![
        done(0, set("a"), 0, 10, OpResult::Done),
        done(0, set("b"), 20, 100, OpResult::Done),
        done(1, Op::Get, 30, 40, val(Some("b"))),
        done(2, Op::Get, 50, 60, val(Some("a"))),
    ];
    let v = violation(events.clone());
    assert_eq!(v.minimal, events, "{v}");
    // The same reads, overlapping each other, are fine.
    let mut overlapping = events;
    overlapping[3].invoke = 35;
    assert_ok(overlapping);
}

#[test]
fn concurrent_cas_from_absent_both_succeeding_fails() {
    violation(vec![
        done(0, cas(None, "a"), 0, 10, OpResult::Cas(true)),
        done(1, cas(None, "b"), 0, 10, OpResult::Cas(true)),
    ]);
}

#[test]
fn concurrent_cas_from_absent_one_succeeding_passes() {
    assert_ok(vec![
        done(0, cas(None, "a"), 0, 10, OpResult::Cas(true)),
        done(1, cas(None, "b"), 0, 10, OpResult::Cas(false)),
        done(2, Op::Get, 20, 30, val(Some("a"))),
    ]);
}

#[test]
fn unknown_write_later_read_passes() {
    assert_ok(vec![
        done(0, set("a"), 0, 10, OpResult::Done),
        lost(1, set("b"), 20),
        done(2, Op::Get, 30, 40, val(Some("a"))),
        done(2, Op::Get, 1000, 1010, val(Some("b"))),
        done(3, Op::Get, 2000, 2010, val(Some("b"))),
    ]);
    // An unknown cas taking effect long after its client gave up.
    assert_ok(vec![
        done(0, set("a"), 0, 10, OpResult::Done),
        lost(1, cas(Some("a"), "b"), 20),
        done(2, Op::Get, 30, 40, val(Some("a"))),
        done(2, Op::Get, 1000, 1010, val(Some("b"))),
    ]);
}

#[test]
fn unknown_write_never_read_passes() {
    assert_ok(vec![
        done(0, set("a"), 0, 10, OpResult::Done),
        lost(1, set("b"), 20),
        lost(1, Op::Del, 25),
        lost(1, Op::Get, 26),
        done(2, Op::Get, 30, 40, val(Some("a"))),
        done(2, Op::Get, 50, 60, val(Some("a"))),
    ]);
}

#[test]
fn value_no_write_wrote_fails_despite_unknown_writes() {
    let v = violation(vec![
        done(0, set("a"), 0, 10, OpResult::Done),
        lost(1, set("b"), 20),
        done(2, Op::Get, 30, 40, val(Some("c"))),
    ]);
    assert!(v.minimal.iter().all(|e| e.complete.is_some()), "{v}");
    // And an unknown write cannot come back once overwritten by a later acknowledged write.
    violation(vec![
        lost(1, set("b"), 0),
        done(2, Op::Get, 10, 20, val(Some("b"))),
        done(0, set("a"), 30, 40, OpResult::Done),
        done(2, Op::Get, 50, 60, val(Some("b"))),
    ]);
}

#[test]
fn mismatched_result_kind_is_a_violation() {
    violation(vec![done(0, Op::Get, 0, 1, OpResult::Done)]);
}

#[test]
fn keys_are_checked_independently() {
    let mut events = vec![done(0, set("a"), 0, 10, OpResult::Done), done(1, Op::Get, 20, 30, val(Some("a")))];
    // The same times and values on another key, which never saw "a".
    events.push(Event { key: "other".into(), ..done(1, Op::Get, 20, 30, val(None)) });
    let report = check(&History { events: events.clone() }, BUDGET);
    assert_eq!((report.keys, report.ops, &report.verdict), (2, 3, &Verdict::Ok), "{report}");
    events.push(Event { key: "other".into(), ..done(1, Op::Get, 40, 50, val(Some("a"))) });
    match check(&History { events }, BUDGET).verdict {
        Verdict::Violation(v) => assert_eq!(v.key, "other"),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn exhausted_budget_is_unknown_not_ok() {
    let events: Vec<Event> = (0..6).map(|c| done(c, set(&format!("v{c}")), 0, 10, OpResult::Done)).collect();
    let report = check(&History { events: events.clone() }, 2);
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert_eq!(report.unknown_keys, vec!["k".to_string()]);
    assert!(report.to_string().contains("unknown"), "{report}");
    assert_eq!(check(&History { events }, BUDGET).verdict, Verdict::Ok);
}

#[test]
fn history_builder_records_invocations_and_completions() {
    let mut h = History::new();
    let w = h.invoke(0, "k", set("a"), 0);
    let r = h.invoke(1, "k", Op::Get, 5);
    h.complete(w, 10, OpResult::Done).unwrap();
    h.complete(r, 12, val(Some("a"))).unwrap();
    assert!(h.complete(r, 13, val(None)).is_err());
    assert!(h.complete(7, 13, val(None)).is_err());
    h.push(lost(2, Op::Del, 20));
    assert_eq!(h.events.len(), 3);
    assert_eq!(check(&h, BUDGET).verdict, Verdict::Ok);
}

#[test]
fn minimal_subhistory_strips_noise() {
    let mut events = Vec::new();
    // 100 unrelated valid operations: writes, each read back, some concurrent.
    for i in 0..50u64 {
        let t = i * 20;
        let value = format!("n{i}");
        events.push(done((i % 3) as usize, set(&value), t, t + 10, OpResult::Done));
        events.push(done(3 + (i % 2) as usize, Op::Get, t + 5, t + 15, val(Some(&value))));
    }
    // Then new-then-old reads around a slow write.
    let violating = vec![
        done(5, set("a"), 2000, 2010, OpResult::Done),
        done(6, set("b"), 2020, 2100, OpResult::Done),
        done(7, Op::Get, 2030, 2040, val(Some("b"))),
        done(8, Op::Get, 2050, 2060, val(Some("a"))),
    ];
    events.extend(violating.iter().cloned());
    let v = violation(events);
    assert!(v.minimal.len() <= 4, "{v}");
    for e in &violating[2..] {
        assert!(v.minimal.contains(e), "{v}");
    }
    assert_eq!(v.minimal, violating, "{v}");
    assert!(!v.explanation.contains("stopped"), "{v}");
}

#[test]
fn shrinking_is_bounded_by_the_budget() {
    // A read nobody explains, found at once, then many valid operations to shrink away.
    let mut events = vec![done(1, Op::Get, 0, 5, val(Some("zzz")))];
    for i in 0..50u64 {
        let (t, value) = (10 + i * 20, format!("n{i}"));
        events.push(done(0, set(&value), t, t + 5, OpResult::Done));
        events.push(done(0, Op::Get, t + 10, t + 15, val(Some(&value))));
    }
    let history = History { events };
    // Enough for the check, not for the shrinking.
    match check(&history, 1).verdict {
        Verdict::Violation(v) => assert!(v.explanation.contains("stopped"), "{v}"),
        other => panic!("expected a violation, got {other:?}"),
    }
    match check(&history, BUDGET).verdict {
        Verdict::Violation(v) => {
            assert_eq!(v.minimal.len(), 1, "{v}");
            assert!(!v.explanation.contains("stopped"), "{v}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

/// xorshift64: deterministic randomness without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A history of a real linearizable register per key: each operation takes effect at a
/// point inside its interval (for an unknown one: some time after its invoke, or never) and
/// operations apply in the order of those points. Returns it with the final values.
fn generate(seed: u64, clients: usize, keys: usize, total: usize) -> (History, BTreeMap<String, Option<Vec<u8>>>) {
    struct Planned {
        event: Event,
        /// When it takes effect, if it does.
        point: Option<u64>,
    }
    let mut rng = XorShift(seed);
    let mut clock = vec![0u64; clients];
    let mut recent: Vec<Vec<Vec<u8>>> = vec![Vec::new(); keys];
    let mut planned = Vec::with_capacity(total);
    for n in 0..total {
        let c = n % clients;
        let k = rng.below(keys as u64) as usize;
        let value = format!("c{c}-{n}").into_bytes();
        let op = match rng.below(10) {
            0..=3 => Op::Get,
            4..=6 => Op::Set(value.clone()),
            7 => Op::Del,
            _ => {
                let expected = match rng.below(3) {
                    0 => None,
                    _ => recent[k].iter().rev().nth(rng.below(3) as usize).cloned(),
                };
                Op::Cas { expected, new: value.clone() }
            }
        };
        if !matches!(op, Op::Get | Op::Del) {
            recent[k].push(value);
        }
        let invoke = clock[c] + rng.below(20);
        let point = invoke + rng.below(60);
        let unknown = rng.below(100) < 3;
        let (point, complete) = if unknown {
            clock[c] = invoke + 100;
            (rng.below(2).eq(&0).then(|| invoke + rng.below(400)), None)
        } else {
            let complete = point + rng.below(60);
            clock[c] = complete;
            (Some(point), Some(complete))
        };
        let event =
            Event { client: c, key: format!("key{k}"), op, invoke, complete: complete.map(|t| (t, OpResult::Done)) };
        planned.push(Planned { event, point });
    }
    let mut by_point: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].point.is_some()).collect();
    by_point.sort_by_key(|&i| planned[i].point);
    let mut registers: BTreeMap<String, Option<Vec<u8>>> = (0..keys).map(|k| (format!("key{k}"), None)).collect();
    for i in by_point {
        let event = &mut planned[i].event;
        let Some(register) = registers.get_mut(&event.key) else { continue };
        let result = match &event.op {
            Op::Get => OpResult::Value(register.clone()),
            Op::Set(v) => {
                *register = Some(v.clone());
                OpResult::Done
            }
            Op::Del => {
                *register = None;
                OpResult::Done
            }
            Op::Cas { expected, new } => {
                let set = register == expected;
                if set {
                    *register = Some(new.clone());
                }
                OpResult::Cas(set)
            }
        };
        if let Some((_, r)) = &mut event.complete {
            *r = result;
        }
    }
    let history = History { events: planned.into_iter().map(|p| p.event).collect() };
    (history, registers)
}

/// Makes one late read of `history` return a value overwritten long before it: written by a
/// set that completed before an acknowledged write of something else was invoked, which
/// itself completed before the read was invoked. Returns the read's index.
fn perturb(history: &mut History) -> usize {
    let events = &history.events;
    let acked_other_write = |e: &Event, x: &[u8]| match (&e.op, e.complete.as_ref().map(|(_, r)| r)) {
        (Op::Set(v), Some(OpResult::Done)) => v.as_slice() != x,
        (Op::Del, Some(OpResult::Done)) => true,
        (Op::Cas { new, .. }, Some(OpResult::Cas(true))) => new.as_slice() != x,
        _ => false,
    };
    let mut reads: Vec<usize> =
        (0..events.len()).filter(|&i| matches!(events[i].op, Op::Get) && events[i].complete.is_some()).collect();
    reads.sort_by_key(|&i| std::cmp::Reverse(events[i].invoke));
    for g in reads {
        let read = &events[g];
        for w in events.iter().filter(|w| w.key == read.key) {
            let (Op::Set(x), Some((w_done, OpResult::Done))) = (&w.op, &w.complete) else { continue };
            let overwritten = events.iter().any(|o| {
                o.key == read.key
                    && acked_other_write(o, x)
                    && o.invoke > *w_done
                    && o.complete.as_ref().is_some_and(|(t, _)| *t < read.invoke)
            });
            if overwritten && read.complete.as_ref().is_some_and(|(_, r)| *r != OpResult::Value(Some(x.clone()))) {
                let x = x.clone();
                if let Some((_, r)) = &mut history.events[g].complete {
                    *r = OpResult::Value(Some(x));
                }
                return g;
            }
        }
    }
    panic!("no read to perturb");
}

#[test]
fn generated_valid_history_passes_and_perturbed_one_fails() {
    let (mut history, finals) = generate(0x9E37_79B9_7F4A_7C15, 8, 5, 2000);
    let unknown = history.events.iter().filter(|e| e.complete.is_none()).count();
    assert!(unknown > 10, "only {unknown} operations of unknown outcome");

    let start = Instant::now();
    let report = check(&history, BUDGET);
    let elapsed = start.elapsed();
    eprintln!("2000 ops over 5 keys ({unknown} unknown): {report} in {elapsed:?}");
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
    let limit = if cfg!(debug_assertions) { 20 } else { 2 };
    assert!(elapsed.as_secs() < limit, "the check took {elapsed:?}");
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());

    let g = perturb(&mut history);
    let read = history.events[g].clone();
    let start = Instant::now();
    let report = check(&history, BUDGET);
    eprintln!("perturbed: checked and shrunk in {:?}: {report}", start.elapsed());
    match report.verdict {
        Verdict::Violation(v) => {
            assert_eq!(v.key, read.key);
            assert!(v.minimal.contains(&read), "{v}");
            assert!(v.minimal.len() <= 4, "{v}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn generated_single_key_history_with_high_concurrency_passes() {
    let (history, finals) = generate(42, 8, 1, 1000);
    let start = Instant::now();
    let report = check(&history, BUDGET);
    eprintln!("1000 ops on 1 key: {report} in {:?}", start.elapsed());
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());
}

#[test]
fn lost_writes_correct_histories_report_nothing() {
    let history = History {
        events: vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            // Overlaps the last write: either may be last.
            done(1, set("b"), 20, 40, OpResult::Done),
            done(2, set("c"), 30, 50, OpResult::Done),
            lost(3, set("d"), 35),
            done(0, cas(Some("z"), "e"), 60, 70, OpResult::Cas(false)),
        ],
    };
    for final_value in ["b", "c", "d"] {
        let finals = BTreeMap::from([("k".to_string(), Some(b(final_value)))]);
        assert!(lost_acknowledged_writes(&history, &finals).is_empty(), "{final_value}");
    }
    // No acknowledged write: absent, or what an unknown write wrote.
    let history = History { events: vec![lost(0, set("a"), 0), done(1, Op::Get, 5, 6, val(None))] };
    for final_value in [None, Some(b("a"))] {
        let finals = BTreeMap::from([("k".to_string(), final_value)]);
        assert!(lost_acknowledged_writes(&history, &finals).is_empty());
    }
    // A del last.
    let history =
        History { events: vec![done(0, set("a"), 0, 10, OpResult::Done), done(0, Op::Del, 20, 30, OpResult::Done)] };
    assert!(lost_acknowledged_writes(&history, &BTreeMap::from([("k".to_string(), None)])).is_empty());
}

#[test]
fn lost_writes_stale_or_unwritten_final_value_is_reported() {
    let history = History {
        events: vec![
            done(0, set("a"), 0, 10, OpResult::Done),
            done(1, set("b"), 20, 30, OpResult::Done),
            done(0, cas(Some("b"), "c"), 40, 50, OpResult::Cas(true)),
            done(2, cas(Some("q"), "x"), 45, 55, OpResult::Cas(false)),
        ],
    };
    for stale in [Some("a"), Some("b"), None, Some("x"), Some("never")] {
        let finals = BTreeMap::from([("k".to_string(), stale.map(b))]);
        assert_eq!(lost_acknowledged_writes(&history, &finals), vec!["k".to_string()], "{stale:?}");
    }
    let finals = BTreeMap::from([("k".to_string(), Some(b("c")))]);
    assert!(lost_acknowledged_writes(&history, &finals).is_empty());
    // A key without any recorded write must still be absent.
    let finals = BTreeMap::from([("untouched".to_string(), Some(b("c")))]);
    assert_eq!(lost_acknowledged_writes(&history, &finals), vec!["untouched".to_string()]);
}

/// Every linearization by brute force (for a few operations): whether one exists, and the
/// final values linearizations can end with.
fn brute_force(events: &[Event]) -> (bool, Vec<Option<Vec<u8>>>) {
    fn go(events: &[Event], used: &mut [bool], state: Option<Vec<u8>>, finals: &mut Vec<Option<Vec<u8>>>) -> bool {
        let mut ok = false;
        if events.iter().zip(used.iter()).all(|(e, &u)| u || e.complete.is_none()) {
            ok = true;
            if !finals.contains(&state) {
                finals.push(state.clone());
            }
        }
        for i in 0..events.len() {
            if used[i] {
                continue;
            }
            let e = &events[i];
            let blocked = events
                .iter()
                .zip(used.iter())
                .any(|(o, &u)| !u && o.complete.as_ref().is_some_and(|(t, _)| (*t).max(o.invoke) < e.invoke));
            if blocked {
                continue;
            }
            let result = e.complete.as_ref().map(|(_, r)| r);
            let next = match (&e.op, result) {
                (Op::Get, None) => continue,
                (Op::Get, Some(OpResult::Value(v))) if *v == state => state.clone(),
                (Op::Set(v), None | Some(OpResult::Done)) => Some(v.clone()),
                (Op::Del, None | Some(OpResult::Done)) => None,
                (Op::Cas { expected, new }, None | Some(OpResult::Cas(true))) if *expected == state => {
                    Some(new.clone())
                }
                (Op::Cas { expected, .. }, None | Some(OpResult::Cas(false))) if *expected != state => state.clone(),
                _ => continue,
            };
            used[i] = true;
            ok |= go(events, used, next, finals);
            used[i] = false;
        }
        ok
    }
    let mut finals = Vec::new();
    let ok = go(events, &mut vec![false; events.len()], None, &mut finals);
    (ok, finals)
}

/// A random small history on key "k" over few values, so that values repeat and
/// operations overlap: most are not linearizable.
fn random_small_history(rng: &mut XorShift) -> Vec<Event> {
    let pick = |rng: &mut XorShift| -> Option<Vec<u8>> {
        match rng.below(4) {
            0 => None,
            n => Some(vec![b'a' + n as u8 - 1]),
        }
    };
    let n = 1 + rng.below(7) as usize;
    (0..n)
        .map(|c| {
            let op = match rng.below(4) {
                0 => Op::Get,
                1 => Op::Set(pick(rng).unwrap_or_else(|| b("a"))),
                2 => Op::Del,
                _ => Op::Cas { expected: pick(rng), new: pick(rng).unwrap_or_else(|| b("b")) },
            };
            let invoke = rng.below(20);
            let complete = invoke + rng.below(10);
            let result = match &op {
                Op::Get => OpResult::Value(pick(rng)),
                Op::Set(_) | Op::Del => OpResult::Done,
                Op::Cas { .. } => OpResult::Cas(rng.below(2) == 0),
            };
            let complete = (rng.below(5) != 0).then_some((complete, result));
            Event { client: c, key: "k".into(), op, invoke, complete }
        })
        .collect()
}

#[test]
fn agrees_with_brute_force_on_random_small_histories() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let (mut linearizable, mut not) = (0, 0);
    for _ in 0..20_000 {
        let events = random_small_history(&mut rng);
        let (expected, finals) = brute_force(&events);
        let history = History { events: events.clone() };
        let report = check(&history, BUDGET);
        match &report.verdict {
            Verdict::Ok => {
                assert!(expected, "claimed linearizable: {events:#?}");
                linearizable += 1;
                // No final value a linearization can end with is reported lost.
                for f in finals {
                    let map = BTreeMap::from([("k".to_string(), f.clone())]);
                    assert!(lost_acknowledged_writes(&history, &map).is_empty(), "final {f:?}: {events:#?}");
                }
            }
            Verdict::Violation(v) => {
                assert!(!expected, "claimed a violation: {v}\n{events:#?}");
                not += 1;
                // What is shown fails on its own, and is part of the history.
                assert!(!brute_force(&v.minimal).0, "minimal part is linearizable: {v}");
                assert!(v.minimal.iter().all(|e| events.contains(e)), "{v}");
            }
            Verdict::Unknown => panic!("budget exceeded: {events:#?}"),
        }
    }
    assert!(linearizable > 2_000 && not > 2_000, "{linearizable} linearizable, {not} not");
}
