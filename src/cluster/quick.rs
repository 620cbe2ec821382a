//! The quick path: a request whose every command has one key, its first
//! argument (`GET k`, `SET k v`, `HSET k f v`...), the shape of most
//! pipelines. Such a request needs no planner: each command goes to the
//! primary of its key's slot as it is, and its reply is its result. So the
//! commands are routed in one pass over the encoded bytes, copied into one
//! buffer per node, written, and each reply is put in its command's place.
//!
//! Anything else goes to the planner ([`super::plan`]) before anything is
//! sent. A reply that asks for more (a `MOVED`, an `ASK`, a `TRYAGAIN`...)
//! or a node that fails makes that command a job for the general engine
//! ([`super::run`]), which takes it from there with the same rules.

use std::time::Instant;

use super::nodes::Nodes;
use super::plan::{fan_out, job, Job, Merge, Outcome, Part, Plan, Src, Target};
use super::run::{Group, Resend, RoundOutcome};
use super::slot::key_slot;
use crate::connection::is_session_command;
use crate::error::Result;
use crate::resp::Value;

/// Command names seen in one request, with whether the quick path takes
/// them: most pipelines repeat a name or two.
const NAMES_KEPT: usize = 4;

/// One command routed by the quick path.
#[derive(Clone, Copy)]
struct Routed {
    /// The shard index of its slot's primary.
    owner: u32,
    slot: u16,
    start: u32,
    end: u32,
}

/// The buffers the quick path reuses from request to request.
#[derive(Default)]
pub(super) struct QuickScratch {
    routed: Vec<Routed>,
}

/// What the quick path made of a request.
pub(super) enum Quick {
    /// Every command answered, each reply in its node's group, in order:
    /// see [`QuickScratch::hand_over`].
    Grouped(Vec<Option<Group>>),
    /// Done otherwise: the replies in order, or why the request failed.
    Done(Result<Vec<Value>>),
    /// Not the quick path's shape: plan it (nothing was sent).
    Plan,
}

impl QuickScratch {
    /// Hands each reply of a [`Quick::Grouped`] request to `each` in the
    /// caller's order; the first error `each` returns is returned once
    /// every reply was handed over.
    pub(super) fn hand_over(
        &self,
        mut groups: Vec<Option<Group>>,
        each: &mut dyn FnMut(usize, Value) -> Result<()>,
    ) -> Result<()> {
        let mut first_error = None;
        for (i, r) in self.routed.iter().enumerate() {
            // Every group holds every reply (checked before): never Nil.
            let reply = match groups[r.owner as usize].as_mut() {
                Some(g) => g.received.pop_front().unwrap_or(Value::Nil),
                None => Value::Nil,
            };
            if let Err(e) = each(i, reply) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Nodes {
    /// Runs the `count` commands encoded in `bytes` by the quick path if
    /// every one of them has the quick shape and a known primary.
    pub(super) fn run_quick(
        &mut self,
        bytes: &[u8],
        count: usize,
        resend: Resend,
        scratch: &mut QuickScratch,
    ) -> Quick {
        if self.options.read_from_replicas || u32::try_from(bytes.len()).is_err() {
            return Quick::Plan;
        }
        let started = Instant::now();
        // Before routing: a refresh renumbers the shards.
        self.refresh_if_due();
        if !self.route_all(bytes, count, &mut scratch.routed) {
            return Quick::Plan;
        }
        let mut groups = self.quick_groups(bytes, &scratch.routed);
        for group in groups.iter_mut().flatten() {
            self.write_group(group);
        }
        for group in groups.iter_mut().flatten() {
            self.read_group(group);
        }
        if groups.iter().flatten().all(|g| self.all_answered(g)) {
            return Quick::Grouped(groups);
        }
        list_entries(&mut groups, &scratch.routed);
        let mut replies = vec![Value::Nil; count];
        let mut left: Vec<Job> = Vec::new();
        let mut outcome = RoundOutcome::default();
        for group in groups.iter_mut().flatten() {
            self.place(
                group,
                &scratch.routed,
                resend,
                &mut replies,
                &mut left,
                &mut outcome,
            );
        }
        if left.is_empty() {
            return Quick::Done(Ok(replies));
        }
        let mut round = 0;
        if outcome.pause {
            round = 1;
            self.pause(round, started);
        }
        Quick::Done(self.finish(bytes, left, resend, replies, (started, round)))
    }

    /// Routes every command, or says that one of them is not the quick
    /// path's to route.
    fn route_all(&self, bytes: &[u8], count: usize, routed: &mut Vec<Routed>) -> bool {
        routed.clear();
        routed.reserve(count);
        let mut names: [(&[u8], bool); NAMES_KEPT] = [(&[], false); NAMES_KEPT];
        let mut kept = 0;
        let mut at = 0;
        for _ in 0..count {
            let command = match Command::read(bytes, at) {
                Some(c) => c,
                None => return false,
            };
            let name = &bytes[command.name.0..command.name.1];
            let quick = match names[..kept].iter().find(|(n, _)| same(n, name)) {
                Some(&(_, quick)) => quick,
                None => {
                    let quick = self.is_quick_name(name);
                    if kept < NAMES_KEPT {
                        names[kept] = (name, quick);
                        kept += 1;
                    }
                    quick
                }
            };
            let key = match command.key {
                Some((a, b)) if quick => &bytes[a..b],
                _ => return false,
            };
            let slot = key_slot(key);
            let owner = match self.map.owner(slot) {
                Some(owner) => owner as u32,
                None => return false,
            };
            routed.push(Routed {
                owner,
                slot,
                start: at as u32,
                end: command.end as u32,
            });
            at = command.end;
        }
        at == bytes.len()
    }

    /// Whether commands named `name` take the quick path: one key, the
    /// first argument, and nothing else to decide (not sent to every
    /// primary, no session change, no choice of replica).
    fn is_quick_name(&self, name: &[u8]) -> bool {
        fan_out(&[name]).is_none()
            && !is_session_command(name, None)
            && self.table.key_is_first_argument(name)
    }

    /// One group per shard with commands, their bytes copied in order.
    /// Its entries are left empty: on this path a reply's command is known
    /// from `routed` (see [`list_entries`] for when they are wanted).
    fn quick_groups(&self, bytes: &[u8], routed: &[Routed]) -> Vec<Option<Group>> {
        let mut sizes = vec![(0usize, 0usize); self.map.shard_count()];
        for r in routed {
            let size = &mut sizes[r.owner as usize];
            size.0 += (r.end - r.start) as usize;
            size.1 += 1;
        }
        let mut groups: Vec<Option<Group>> = sizes
            .iter()
            .enumerate()
            .map(|(owner, &(size, commands))| {
                let shard = self.map.shard_at(owner).filter(|_| commands > 0)?;
                Some(Group::sized(shard.primary.clone(), size, commands))
            })
            .collect();
        for r in routed {
            if let Some(group) = &mut groups[r.owner as usize] {
                group.add_unlisted(&bytes[r.start as usize..r.end as usize]);
            }
        }
        groups
    }

    /// Puts each reply of `group` in its command's place; a command
    /// redirected, refused for now, or left unanswered becomes a job.
    fn place(
        &mut self,
        group: &mut Group,
        routed: &[Routed],
        resend: Resend,
        replies: &mut [Value],
        left: &mut Vec<Job>,
        outcome: &mut RoundOutcome,
    ) {
        for i in 0..group.entries.len() {
            let caller = group.entries[i].0;
            match group.received.pop_front() {
                Some(Value::Error(line)) if self.is_redirect(&line) => {
                    let mut job = routed_job(caller, &routed[caller]);
                    self.follow(&mut job, Value::Error(line), &group.addr, outcome);
                    left.push(job);
                }
                Some(reply) => replies[caller] = reply,
                None => {
                    let mut job = routed_job(caller, &routed[caller]);
                    self.unanswered(&mut job, group, resend, outcome);
                    left.push(job);
                }
            }
        }
    }

    /// Every command of `group` has its reply, and none of them asks for
    /// more.
    fn all_answered(&self, group: &Group) -> bool {
        group.received.len() == group.replies
            && group.received.iter().all(|v| match v {
                Value::Error(line) => !self.is_redirect(line),
                _ => true,
            })
    }

    /// Whether an error reply is one the engine acts on.
    fn is_redirect(&self, line: &str) -> bool {
        matches!(
            line.split(' ').next().unwrap_or(""),
            "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN" | "READONLY"
        )
    }

    /// Runs the jobs left by the quick round through the general engine
    /// and puts their replies in place.
    fn finish(
        &mut self,
        bytes: &[u8],
        jobs: Vec<Job>,
        resend: Resend,
        mut replies: Vec<Value>,
        (started, round): (Instant, u32),
    ) -> Result<Vec<Value>> {
        let parts = (0..jobs.len())
            .map(|j| Part {
                jobs: j..j + 1,
                merge: Merge::One,
            })
            .collect();
        let callers: Vec<usize> = jobs.iter().map(|j| j.caller).collect();
        let mut plan = Plan {
            jobs,
            parts,
            ..Plan::default()
        };
        let answers = self.run_after(&mut plan, bytes, resend, started, round)?;
        for (caller, answer) in callers.into_iter().zip(answers) {
            replies[caller] = answer;
        }
        Ok(replies)
    }
}

/// Lists in each group the commands it holds, in order, for when replies
/// are placed one by one.
fn list_entries(groups: &mut [Option<Group>], routed: &[Routed]) {
    for (i, r) in routed.iter().enumerate() {
        if let Some(group) = &mut groups[r.owner as usize] {
            group.entries.push((i, false));
        }
    }
}

/// The job of a command the quick round sent once.
fn routed_job(caller: usize, r: &Routed) -> Job {
    let mut job = job(
        caller,
        Src::Caller(r.start as usize, r.end as usize),
        Target::Slot(r.slot),
        false,
    );
    job.attempts = 1;
    job.outcome = Outcome::Pending;
    job
}

/// An encoded command as the quick path reads it: where its name and
/// first argument are, and where it ends.
struct Command {
    name: (usize, usize),
    key: Option<(usize, usize)>,
    end: usize,
}

impl Command {
    /// The command at `bytes[at..]`, an array of bulk strings as the
    /// encoder writes it; `None` if it is not one.
    #[inline]
    fn read(bytes: &[u8], at: usize) -> Option<Command> {
        let (count, pos) = number_line(bytes, at, b'*')?;
        if count == 0 {
            return None;
        }
        let name = bulk(bytes, pos)?;
        let mut end = name.1 + 2;
        let mut key = None;
        if count > 1 {
            let k = bulk(bytes, end)?;
            key = Some(k);
            end = k.1 + 2;
        }
        for _ in 2..count {
            end = bulk(bytes, end)?.1 + 2;
        }
        Some(Command { name, key, end })
    }
}

/// The bulk string at `bytes[at..]`: where its content starts and ends
/// (before its CRLF).
#[inline]
fn bulk(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let (len, start) = number_line(bytes, at, b'$')?;
    // `start` is within `bytes`, and `len` has at most 19 digits: no
    // overflow.
    if len + 2 > bytes.len() - start {
        return None;
    }
    let end = start + len;
    if bytes[end] != b'\r' || bytes[end + 1] != b'\n' {
        return None;
    }
    Some((start, end))
}

/// `<kind><digits>\r\n` at `at`: the number, and where the line ends. At
/// most 19 digits, so no overflow. The encoder wrote these lines, so this
/// only has to be safe, not forgiving.
#[inline]
pub(super) fn number_line(bytes: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
    // Most lines have one or two digits: read those without a loop.
    if at + 5 <= bytes.len() {
        let line = &bytes[at..at + 5];
        if line[0] != kind {
            return None;
        }
        let a = line[1].wrapping_sub(b'0');
        if a <= 9 {
            if line[2] == b'\r' && line[3] == b'\n' {
                return Some((usize::from(a), at + 4));
            }
            let b = line[2].wrapping_sub(b'0');
            if b <= 9 && line[3] == b'\r' && line[4] == b'\n' {
                return Some((usize::from(a) * 10 + usize::from(b), at + 5));
            }
        }
    }
    number_line_long(bytes, at, kind)
}

/// [`number_line`] for any number of digits.
fn number_line_long(bytes: &[u8], at: usize, kind: u8) -> Option<(usize, usize)> {
    if bytes.get(at) != Some(&kind) {
        return None;
    }
    let first = at + 1;
    let limit = bytes.len().min(first + 19);
    let mut n: usize = 0;
    let mut i = first;
    while i < limit {
        let digit = bytes[i].wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        n = n * 10 + usize::from(digit);
        i += 1;
    }
    if i == first || bytes.get(i) != Some(&b'\r') || bytes.get(i + 1) != Some(&b'\n') {
        return None;
    }
    Some((n, i + 2))
}

/// Two short names, byte for byte (no call to `memcmp` for three bytes).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_encoded_command_its_name_key_and_end() {
        let bytes = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n*1\r\n$4\r\nPING\r\n";
        let c = Command::read(bytes, 0).unwrap();
        assert_eq!(&bytes[c.name.0..c.name.1], b"SET");
        assert_eq!(c.key.map(|(a, b)| &bytes[a..b]), Some(&b"k"[..]));
        let next = Command::read(bytes, c.end).unwrap();
        assert_eq!(&bytes[next.name.0..next.name.1], b"PING");
        assert_eq!(next.key, None);
        assert_eq!(next.end, bytes.len());
    }

    #[test]
    fn refuses_what_the_encoder_would_not_write() {
        for bad in [
            &b"*0\r\n"[..],
            b"*1\r\n$3\r\nGET",
            b"*1\r\n$3\r\nGETX\r\n",
            b"*1\r\n$x\r\nGET\r\n",
            b"+OK\r\n",
            b"*1\r\n$99999999999999999999\r\nGET\r\n",
            b"*1\r\n$18446744073709551615\r\nGET\r\n",
            b"",
        ] {
            assert!(Command::read(bad, 0).is_none(), "{:?}", bad);
        }
    }
}
