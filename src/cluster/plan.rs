//! From commands to jobs: where each command goes, which commands are
//! split per slot or sent to every primary, and how their parts' replies
//! become one reply again.

use std::ops::Range;

use super::keys::{CommandKind, CommandTable};
use super::quick::number_line;
use super::slot::key_slot;
use super::topology::NodeAddr;
use super::{describe, unexpected};
use crate::connection::is_session_command;
use crate::error::{Error, Result};
use crate::resp::{write_header, Value};

/// Where a job goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The node serving this slot.
    Slot(u16),
    /// This node.
    Node(NodeAddr),
    /// Any primary: the command has no keys.
    Any,
}

/// What became of a job.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Still to be sent (again).
    Pending,
    /// Its reply.
    Reply(Value),
    /// Its node failed after it was written, before it was answered.
    Failed(Error),
    /// The retry bounds ran out.
    GaveUp,
}

/// One command as sent to one node.
#[derive(Debug)]
pub(super) struct Job {
    /// The caller's command this is (a part of).
    pub(super) caller: usize,
    /// Its encoded bytes, in the caller's buffer or the plan's own.
    pub(super) bytes: Src,
    pub(super) target: Target,
    /// A read-only command, which may go to a replica.
    pub(super) readonly: bool,
    /// Send to this node after `ASKING`, once.
    pub(super) ask: Option<NodeAddr>,
    /// Send to this node, once: where a `MOVED` said the slot is now,
    /// whatever a lagging refresh says meanwhile.
    pub(super) moved: Option<NodeAddr>,
    /// It was written to a node that failed before answering, so it may
    /// have run (an idempotent job is sent again all the same).
    pub(super) may_have_run: bool,
    pub(super) attempts: u32,
    /// Why it is being retried: the last redirect or failure.
    pub(super) last: Option<Error>,
    pub(super) outcome: Outcome,
    /// For an MGET part: the positions of its keys in the caller's MGET.
    pub(super) key_order: Range<usize>,
}

/// Where a job's bytes are.
#[derive(Clone, Copy, Debug)]
pub(super) enum Src {
    Caller(usize, usize),
    Own(usize, usize),
}

impl Src {
    /// How many bytes.
    pub(super) fn len(self) -> usize {
        match self {
            Src::Caller(a, b) | Src::Own(a, b) => b - a,
        }
    }
}

/// How a caller's command's parts make its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Merge {
    /// One part: its reply.
    One,
    /// Integers, summed (DEL, EXISTS, DBSIZE...).
    Sum,
    /// Each part must succeed; the first part's reply (FLUSHALL, MSET,
    /// SCRIPT LOAD, PING...).
    First,
    /// Arrays, concatenated (KEYS).
    Concat,
    /// Arrays of 0/1, and-ed element by element (SCRIPT EXISTS).
    And,
    /// MGET: each part's elements back at their keys' positions.
    Mget,
    /// Every part's reply, error replies included, as an array.
    List,
}

/// A caller's command: its jobs and how to merge them.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) jobs: Range<usize>,
    pub(super) merge: Merge,
}

/// The jobs of one request.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) jobs: Vec<Job>,
    pub(super) parts: Vec<Part>,
    /// Bytes of the commands made here (split parts).
    pub(super) own: Vec<u8>,
    /// MGET parts' key positions.
    pub(super) key_order: Vec<usize>,
}

impl Plan {
    /// One command (`len` bytes) sent to each of `targets`, merged by `merge`.
    pub(super) fn single(len: usize, targets: Vec<Target>, merge: Merge) -> Plan {
        let jobs: Vec<Job> = targets
            .into_iter()
            .map(|t| job(0, Src::Caller(0, len), t, false))
            .collect();
        Plan {
            parts: vec![Part {
                jobs: 0..jobs.len(),
                merge,
            }],
            jobs,
            ..Plan::default()
        }
    }

    /// The bytes of a job.
    pub(super) fn bytes<'a>(&'a self, caller: &'a [u8], src: Src) -> &'a [u8] {
        match src {
            Src::Caller(a, b) => &caller[a..b],
            Src::Own(a, b) => &self.own[a..b],
        }
    }
}

/// Builds plans, reusing its buffers.
pub(super) struct Planner<'t> {
    pub(super) table: &'t CommandTable,
    pub(super) primaries: &'t [NodeAddr],
    pub(super) args: Vec<Range<usize>>,
    pub(super) positions: Vec<usize>,
}

impl Planner<'_> {
    /// Plans every command of `bytes` (encoded commands, `count` of them).
    pub(super) fn plan_all(&mut self, bytes: &[u8], count: usize) -> Result<Plan> {
        let mut plan = Plan {
            jobs: Vec::with_capacity(count),
            parts: Vec::with_capacity(count),
            ..Plan::default()
        };
        let mut at = 0;
        let mut args: Vec<&[u8]> = Vec::new();
        for caller in 0..count {
            let end = split_args(bytes, at, &mut self.args)?;
            args.clear();
            args.extend(self.args.iter().map(|r| &bytes[r.clone()]));
            if is_session_command(args[0], args.get(1).copied()) {
                return Err(keeps_no_session(args[0]));
            }
            self.plan_one(&mut plan, caller, &args, (at, end))?;
            at = end;
        }
        if at != bytes.len() {
            return Err(malformed(at));
        }
        // A pipeline reads from replicas only if it only reads: a read
        // after a write in it must see that write.
        if plan.jobs.iter().any(|j| !j.readonly) {
            for job in &mut plan.jobs {
                job.readonly = false;
            }
        }
        Ok(plan)
    }

    /// The one slot of every key of every command in `bytes` (`None`: no
    /// keys), for a transaction; keys in two slots are refused.
    pub(super) fn common_slot(&mut self, bytes: &[u8], count: usize) -> Result<Option<u16>> {
        let mut common = None;
        let mut at = 0;
        for _ in 0..count {
            let end = split_args(bytes, at, &mut self.args)?;
            let args: Vec<&[u8]> = self.args.iter().map(|r| &bytes[r.clone()]).collect();
            self.table.key_positions(&args, &mut self.positions);
            let slot = self
                .one_slot(&args)
                .map_err(|slots| cross_slot("a transaction", slots))?;
            match (common, slot) {
                (Some(a), Some(b)) if a != b => return Err(cross_slot("a transaction", (a, b))),
                (None, Some(b)) => common = Some(b),
                _ => {}
            }
            at = end;
        }
        Ok(common)
    }

    /// Plans the command at `bytes[span]`.
    fn plan_one(
        &mut self,
        plan: &mut Plan,
        caller: usize,
        args: &[&[u8]],
        span: (usize, usize),
    ) -> Result<()> {
        let first = plan.jobs.len();
        let src = Src::Caller(span.0, span.1);
        if let Some(merge) = fan_out(args) {
            for node in self.primaries {
                plan.jobs
                    .push(job(caller, src, Target::Node(node.clone()), false));
            }
            plan.parts.push(Part {
                jobs: first..plan.jobs.len(),
                merge,
            });
            return Ok(());
        }
        let kind = self.table.key_positions(args, &mut self.positions);
        let readonly = matches!(kind, CommandKind::Known { readonly: true });
        let target = match self.one_slot(args) {
            Ok(Some(slot)) => Target::Slot(slot),
            Ok(None) => Target::Any,
            Err(slots) => return self.split(plan, caller, args, slots, readonly),
        };
        plan.jobs.push(job(caller, src, target, readonly));
        plan.parts.push(Part {
            jobs: first..first + 1,
            merge: Merge::One,
        });
        Ok(())
    }

    /// The slot of every key, if they share one (`None`: no keys); else the
    /// first two slots that differ.
    fn one_slot(&self, args: &[&[u8]]) -> std::result::Result<Option<u16>, (u16, u16)> {
        let mut slot = None;
        for &i in &self.positions {
            let s = key_slot(args[i]);
            match slot {
                None => slot = Some(s),
                Some(t) if t != s => return Err((t, s)),
                _ => {}
            }
        }
        Ok(slot)
    }

    /// A multi-key command whose keys span slots: split per slot when Redis
    /// semantics allow (not atomically), else refused before it is sent.
    fn split(
        &mut self,
        plan: &mut Plan,
        caller: usize,
        args: &[&[u8]],
        slots: (u16, u16),
        readonly: bool,
    ) -> Result<()> {
        let name = upper(args[0]);
        let (merge, width) = match name.as_str() {
            "MGET" => (Merge::Mget, 1),
            "DEL" | "UNLINK" | "EXISTS" | "TOUCH" => (Merge::Sum, 1),
            "MSET" => (Merge::First, 2),
            _ => return Err(cross_slot(&name, slots)),
        };
        // Keys by slot, in the order each slot first appears.
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (n, &i) in self.positions.iter().enumerate() {
            if i + width > args.len() {
                return Err(cross_slot(&name, slots));
            }
            let s = key_slot(args[i]);
            match groups.iter_mut().find(|(t, _)| *t == s) {
                Some((_, keys)) => keys.push(n),
                None => groups.push((s, vec![n])),
            }
        }
        let first = plan.jobs.len();
        for (slot, keys) in groups {
            let start = plan.own.len();
            write_header(&mut plan.own, b'*', 1 + keys.len() * width);
            write_bulk(&mut plan.own, args[0]);
            let order_start = plan.key_order.len();
            for &n in &keys {
                let i = self.positions[n];
                for arg in &args[i..i + width] {
                    write_bulk(&mut plan.own, arg);
                }
                plan.key_order.push(n);
            }
            let src = Src::Own(start, plan.own.len());
            let mut part = job(caller, src, Target::Slot(slot), readonly);
            part.key_order = order_start..plan.key_order.len();
            plan.jobs.push(part);
        }
        plan.parts.push(Part {
            jobs: first..plan.jobs.len(),
            merge,
        });
        Ok(())
    }
}

/// A fresh job.
pub(super) fn job(caller: usize, bytes: Src, target: Target, readonly: bool) -> Job {
    Job {
        caller,
        bytes,
        target,
        readonly,
        ask: None,
        moved: None,
        may_have_run: false,
        attempts: 0,
        last: None,
        outcome: Outcome::Pending,
        key_order: 0..0,
    }
}

/// Commands that go to every primary, and how their replies merge.
pub(super) fn fan_out(args: &[&[u8]]) -> Option<Merge> {
    let is = |i: usize, name: &[u8]| args.get(i).map_or(false, |a| a.eq_ignore_ascii_case(name));
    let name = args.first()?;
    // Most commands are none of these: tell by the length first.
    match name.len() {
        4 if is(0, b"PING") => Some(Merge::First),
        4 if is(0, b"KEYS") => Some(Merge::Concat),
        6 if is(0, b"DBSIZE") => Some(Merge::Sum),
        6 if is(0, b"SCRIPT") => {
            if is(1, b"LOAD") || is(1, b"FLUSH") {
                Some(Merge::First)
            } else if is(1, b"EXISTS") {
                Some(Merge::And)
            } else {
                None
            }
        }
        7 if is(0, b"FLUSHDB") => Some(Merge::First),
        8 if is(0, b"FLUSHALL") => Some(Merge::First),
        8 if is(0, b"FUNCTION")
            && (is(1, b"LOAD") || is(1, b"FLUSH") || is(1, b"DELETE") || is(1, b"RESTORE")) =>
        {
            Some(Merge::First)
        }
        _ => None,
    }
}

/// A command name in upper case (names are ASCII; anything else stays
/// unmatched).
pub(super) fn upper(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_uppercase()
}

/// The client-side CROSSSLOT refusal.
pub(super) fn cross_slot(name: &str, (a, b): (u16, u16)) -> Error {
    Error::CrossSlot {
        command: name.to_string(),
        slots: [a, b],
    }
}

/// A command that would change one node connection's session, refused
/// before anything is sent: the cluster's commands go to many connections.
fn keeps_no_session(name: &[u8]) -> Error {
    Error::Config(format!(
        "cluster: {} would change the session of one node's connection, which a cluster \
         cannot keep (its commands go to many nodes); use Pipeline::transaction() or \
         Cluster::transaction for MULTI and WATCH, Cluster::shard_subscriber for SSUBSCRIBE, \
         ClusterOptions for AUTH, HELLO, CLIENT SETNAME and READONLY, or a Connection to one node \
         (nothing was sent)",
        upper(name)
    ))
}

/// A pipeline buffer that does not hold the commands it counts.
fn malformed(at: usize) -> Error {
    Error::Config(format!(
        "cluster: expected an encoded command at byte {} of the request, found something else",
        at
    ))
}

/// Reads the command at `bytes[at..]` (an array of bulk strings, as the
/// encoder writes it), storing each argument's range in `args`; returns
/// where it ends.
pub(super) fn split_args(bytes: &[u8], at: usize, args: &mut Vec<Range<usize>>) -> Result<usize> {
    args.clear();
    let (count, mut pos) = number_line(bytes, at, b'*').ok_or_else(|| malformed(at))?;
    if count == 0 {
        return Err(malformed(at));
    }
    for _ in 0..count {
        let (len, start) = number_line(bytes, pos, b'$').ok_or_else(|| malformed(pos))?;
        let end = start.checked_add(len).ok_or_else(|| malformed(pos))?;
        match (bytes.get(end), bytes.get(end + 1)) {
            (Some(b'\r'), Some(b'\n')) => {}
            _ => return Err(malformed(pos)),
        }
        args.push(start..end);
        pos = end + 2;
    }
    Ok(pos)
}

/// Appends one bulk string.
fn write_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    write_header(out, b'$', arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Merges a command's parts' replies into its reply. An error reply among
/// them is the reply: the command failed as it would on one server.
pub(super) fn merge(
    merge: Merge,
    parts: Vec<Value>,
    key_order: &[Range<usize>],
    order: &[usize],
) -> Result<Value> {
    match merge {
        Merge::One => return Ok(parts.into_iter().next().unwrap_or(Value::Nil)),
        Merge::List => return Ok(Value::Array(parts)),
        _ => {}
    }
    if let Some(e) = parts.iter().find(|v| v.is_error()) {
        return Ok(e.clone());
    }
    Ok(match merge {
        Merge::One | Merge::List | Merge::First => parts.into_iter().next().unwrap_or(Value::Nil),
        Merge::Sum => {
            let mut sum: i64 = 0;
            for v in &parts {
                match v.as_i64() {
                    Some(n) => sum = sum.saturating_add(n),
                    None => return unexpected_part("an integer", v),
                }
            }
            Value::Integer(sum)
        }
        Merge::Concat => {
            let mut all = Vec::new();
            for v in parts {
                match v.into_without_attributes() {
                    Value::Array(items) | Value::Set(items) => all.extend(items),
                    other => return unexpected_part("an array", &other),
                }
            }
            Value::Array(all)
        }
        Merge::And => {
            let mut all: Vec<Value> = Vec::new();
            for v in parts {
                let items = match v.into_without_attributes() {
                    Value::Array(items) => items,
                    other => return unexpected_part("an array", &other),
                };
                if all.is_empty() {
                    all = items;
                    continue;
                }
                for (a, b) in all.iter_mut().zip(items) {
                    if b.as_i64() == Some(0) {
                        *a = Value::Integer(0);
                    }
                }
            }
            Value::Array(all)
        }
        Merge::Mget => {
            let total = key_order.iter().map(|r| r.len()).sum();
            let mut all = vec![Value::Nil; total];
            for (v, range) in parts.into_iter().zip(key_order) {
                let items = match v.into_without_attributes() {
                    Value::Array(items) if items.len() == range.len() => items,
                    other => return unexpected_part("an array with one element per key", &other),
                };
                for (item, &n) in items.into_iter().zip(&order[range.clone()]) {
                    if let Some(slot) = all.get_mut(n) {
                        *slot = item;
                    }
                }
            }
            Value::Array(all)
        }
    })
}

/// A part's reply of the wrong kind for its command: the server is not
/// behaving as Redis does.
fn unexpected_part(expected: &str, found: &Value) -> Result<Value> {
    Err(unexpected(
        format!("{} from every node", expected),
        describe(found),
    ))
}
