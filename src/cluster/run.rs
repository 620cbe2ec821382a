//! Running a plan: jobs grouped by node, every group written before any
//! group's replies are read, redirects and retries within the bounds, and
//! the replies put back in the caller's order.

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use super::nodes::Nodes;
use super::plan::{merge, Job, Merge, Outcome, Plan, Target};
use super::topology::{parse_redirect, NodeAddr, RedirectKind};
use crate::connection::Wait;
use crate::error::{Error, Result, ServerError};
use crate::resp::Value;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Writes up to this size go out in one blocking write; larger ones read
/// early replies while the socket is full, so several large groups cannot
/// deadlock against servers waiting for their replies to be read.
const INTERLEAVE_FROM: usize = 64 * 1024;
/// Pauses between retry rounds double from this...
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// ...up to this.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// What the request may do when a node fails after its commands went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resend {
    /// Report them: they may have run.
    Never,
    /// Send them again: the caller said they are idempotent.
    Idempotent,
}

/// The commands going to one node in one round.
pub(super) struct Group {
    pub(super) addr: NodeAddr,
    bytes: Vec<u8>,
    /// Each job (or, on the quick path, command), and whether `ASKING`
    /// goes before it.
    pub(super) entries: Vec<(usize, bool)>,
    /// The replies owed: one per job, and one per `ASKING`.
    pub(super) replies: usize,
    /// While grouping: the bytes and jobs to come.
    size: usize,
    jobs: usize,
    pub(super) received: VecDeque<Value>,
    /// Why the node failed, and whether anything reached it.
    failure: Option<(Error, bool)>,
}

impl Group {
    fn new(addr: NodeAddr) -> Group {
        Group {
            addr,
            bytes: Vec::new(),
            entries: Vec::new(),
            replies: 0,
            size: 0,
            jobs: 0,
            received: VecDeque::new(),
            failure: None,
        }
    }

    /// A group whose buffers hold `size` bytes of `commands` commands
    /// (without `ASKING`) before they must grow.
    pub(super) fn sized(addr: NodeAddr, size: usize, commands: usize) -> Group {
        let mut group = Group::new(addr);
        group.bytes.reserve_exact(size);
        group.received.reserve_exact(commands);
        group
    }

    /// Adds a command without listing it in `entries`.
    #[inline]
    pub(super) fn add_unlisted(&mut self, command: &[u8]) {
        self.bytes.extend_from_slice(command);
        self.replies += 1;
    }

    /// Adds a command, `ASKING` first when `asking`.
    #[inline]
    pub(super) fn add(&mut self, command: &[u8], entry: usize, asking: bool) {
        if asking {
            self.bytes.extend_from_slice(ASKING);
            self.replies += 1;
        }
        self.bytes.extend_from_slice(command);
        self.replies += 1;
        self.entries.push((entry, asking));
    }
}

/// What to do about a redirect or refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Send again now, to this node, which serves this slot now.
    Moved(NodeAddr, u16),
    /// Send again now to this node, after `ASKING`.
    Ask(NodeAddr),
    /// Send again after a pause.
    Pause,
}

/// Why a round wants a pause before the next.
#[derive(Default)]
pub(super) struct RoundOutcome {
    pub(super) pause: bool,
}

impl Nodes {
    /// Runs every job of `plan` to an outcome, within the bounds, and
    /// returns each caller's command's reply in order.
    pub(super) fn run(
        &mut self,
        plan: &mut Plan,
        caller: &[u8],
        resend: Resend,
    ) -> Result<Vec<Value>> {
        self.run_after(plan, caller, resend, Instant::now(), 0)
    }

    /// [`Nodes::run`] for a request `started` earlier that already made
    /// `round` paused rounds (the quick path's).
    pub(super) fn run_after(
        &mut self,
        plan: &mut Plan,
        caller: &[u8],
        resend: Resend,
        started: Instant,
        mut round: u32,
    ) -> Result<Vec<Value>> {
        loop {
            self.refresh_if_due();
            self.give_up_beyond_bounds(plan, started);
            if !plan
                .jobs
                .iter()
                .any(|j| matches!(j.outcome, Outcome::Pending))
            {
                break;
            }
            let outcome = self.round(plan, caller, resend);
            // No pause when no job has an attempt left.
            let max = self.options.max_attempts;
            if outcome.pause
                && plan
                    .jobs
                    .iter()
                    .any(|j| matches!(j.outcome, Outcome::Pending) && j.attempts < max)
            {
                round += 1;
                self.pause(round, started);
            }
        }
        self.collect(plan, started)
    }

    /// Jobs out of attempts or time give up.
    fn give_up_beyond_bounds(&self, plan: &mut Plan, started: Instant) {
        let out_of_time = started.elapsed() >= self.options.retry_window;
        for job in &mut plan.jobs {
            if matches!(job.outcome, Outcome::Pending)
                && job.attempts > 0
                && (job.attempts >= self.options.max_attempts || out_of_time)
            {
                job.outcome = Outcome::GaveUp;
            }
        }
    }

    /// Sleeps before retry round `round`, never past the retry window, and
    /// at least until a wanted refresh may run.
    pub(super) fn pause(&self, round: u32, started: Instant) {
        let doubled = FIRST_PAUSE.saturating_mul(1 << round.min(16).saturating_sub(1));
        let mut pause = doubled.min(MAX_PAUSE);
        if self.refresh_wanted() {
            pause = pause.max(self.cooldown_left());
        }
        let left = self.options.retry_window.saturating_sub(started.elapsed());
        thread::sleep(pause.min(left));
    }

    /// One round: group the pending jobs by node, write every group, then
    /// read every group's replies.
    fn round(&mut self, plan: &mut Plan, caller: &[u8], resend: Resend) -> RoundOutcome {
        let mut outcome = RoundOutcome::default();
        let mut groups = self.group(plan, caller, &mut outcome);
        for group in &mut groups {
            self.write_group(group);
        }
        for group in &mut groups {
            self.read_group(group);
            self.settle(plan, group, resend, &mut outcome);
        }
        outcome
    }

    /// The pending jobs grouped by the node each goes to; a job that has
    /// nowhere to go waits for a refresh. Each group's buffer is sized
    /// first, then filled: one allocation per node.
    fn group(&mut self, plan: &mut Plan, caller: &[u8], outcome: &mut RoundOutcome) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        // The group of each job, or NONE (not pending, or nowhere to go).
        const NONE: usize = usize::MAX;
        let mut group_of = vec![NONE; plan.jobs.len()];
        let mut unserved = false;
        for (j, job) in plan.jobs.iter_mut().enumerate() {
            if !matches!(job.outcome, Outcome::Pending) {
                continue;
            }
            job.attempts += 1;
            let addr = match self.address_of(job) {
                Some(addr) => addr,
                None => {
                    let slot = match job.target {
                        Target::Slot(s) => s,
                        _ => 0,
                    };
                    job.last = Some(Error::Config(format!(
                        "cluster: expected a node serving slot {}, found none in the slot map",
                        slot
                    )));
                    unserved = true;
                    continue;
                }
            };
            // Few nodes: a linear search beats hashing an address.
            let g = match groups.iter().position(|g| &g.addr == addr) {
                Some(g) => g,
                None => {
                    groups.push(Group::new(addr.clone()));
                    groups.len() - 1
                }
            };
            let group = &mut groups[g];
            if job.ask.is_some() {
                group.size += ASKING.len();
                group.replies += 1;
            }
            group.size += job.bytes.len();
            group.replies += 1;
            group.jobs += 1;
            group_of[j] = g;
        }
        for group in &mut groups {
            group.bytes.reserve_exact(group.size);
            group.entries.reserve_exact(group.jobs);
            group.received.reserve_exact(group.replies);
            group.replies = 0;
        }
        for (j, &g) in group_of.iter().enumerate() {
            if g == NONE {
                continue;
            }
            let job = &plan.jobs[j];
            groups[g].add(plan.bytes(caller, job.bytes), j, job.ask.is_some());
        }
        if unserved {
            self.want_refresh();
            outcome.pause = true;
        }
        groups
    }

    /// The node a job goes to now.
    fn address_of<'a>(&'a self, job: &'a Job) -> Option<&'a NodeAddr> {
        if let Some(addr) = job.ask.as_ref().or(job.moved.as_ref()) {
            return Some(addr);
        }
        match &job.target {
            Target::Node(addr) => Some(addr),
            Target::Any => self.random_primary(),
            Target::Slot(slot) if job.readonly && self.options.read_from_replicas => {
                self.reader_for(*slot)
            }
            Target::Slot(slot) => self.map.primary(*slot),
        }
    }

    /// Opens the group's exchange and writes it.
    pub(super) fn write_group(&mut self, group: &mut Group) {
        let conn = match self.conn(&group.addr) {
            Ok(conn) => conn,
            Err(e) => {
                group.failure = Some((e, false));
                return;
            }
        };
        if let Err(e) = conn.begin() {
            group.failure = Some((e, false));
            return;
        }
        let sent = if group.bytes.len() < INTERLEAVE_FROM {
            conn.send(&group.bytes, group.replies)
        } else {
            conn.send_interleaved(&group.bytes, group.replies, &mut group.received)
        };
        if let Err(e) = sent {
            let reached = e.may_have_reached_server();
            group.failure = Some((e, reached));
        }
    }

    /// Reads the rest of the group's replies.
    pub(super) fn read_group(&mut self, group: &mut Group) {
        if group.failure.is_some() {
            self.drop_conn(&group.addr);
            return;
        }
        let conn = match self.conn(&group.addr) {
            Ok(conn) => conn,
            Err(e) => {
                group.failure = Some((e, true));
                return;
            }
        };
        while group.received.len() < group.replies {
            match conn.receive(Wait::Default) {
                Ok(v) => group.received.push_back(v),
                Err(e) => {
                    group.failure = Some((e, true));
                    break;
                }
            }
        }
        if group.failure.is_some() {
            self.drop_conn(&group.addr);
        } else {
            conn.end();
        }
    }

    /// Gives each job of the group its outcome: a reply, a redirect to
    /// follow, a retry, or a failure.
    fn settle(
        &mut self,
        plan: &mut Plan,
        group: &mut Group,
        resend: Resend,
        outcome: &mut RoundOutcome,
    ) {
        for &(j, asking) in &group.entries {
            // ASKING's own reply: +OK. Were it anything else, the command
            // went without it and its own reply (a MOVED, most likely)
            // says what to do.
            if asking && group.received.pop_front().is_none() {
                self.unanswered(&mut plan.jobs[j], group, resend, outcome);
                continue;
            }
            match group.received.pop_front() {
                Some(reply) => self.follow(&mut plan.jobs[j], reply, &group.addr, outcome),
                None => self.unanswered(&mut plan.jobs[j], group, resend, outcome),
            }
        }
    }

    /// A job whose node failed before answering it.
    pub(super) fn unanswered(
        &mut self,
        job: &mut Job,
        group: &Group,
        resend: Resend,
        outcome: &mut RoundOutcome,
    ) {
        let (error, reached) = match &group.failure {
            Some((e, reached)) => (copy_error(e), *reached),
            None => return,
        };
        outcome.pause = true;
        job.may_have_run |= reached;
        if (!reached || resend == Resend::Idempotent) && transport_failure(&error) {
            job.ask = None;
            job.moved = None;
            job.last = Some(error);
            return;
        }
        job.outcome = Outcome::Failed(error);
    }

    /// A reply: the job's answer, or a redirect or refusal to act on.
    pub(super) fn follow(
        &mut self,
        job: &mut Job,
        reply: Value,
        from: &NodeAddr,
        outcome: &mut RoundOutcome,
    ) {
        let line = match &reply {
            Value::Error(line) => line.as_str(),
            _ => {
                job.outcome = Outcome::Reply(reply);
                return;
            }
        };
        match self.redirect(line, from) {
            Some(action) => {
                // Redirected again and again: the nodes disagree for now
                // (a slot changing hands); give them time.
                outcome.pause |= action == Action::Pause || job.attempts >= 3;
                job.ask = None;
                job.moved = None;
                match action {
                    Action::Ask(addr) => job.ask = Some(addr),
                    Action::Moved(addr, slot) => {
                        job.moved = Some(addr);
                        // A command whose keys the table did not know
                        // has one now: the slot the node named.
                        if job.target == Target::Any {
                            job.target = Target::Slot(slot);
                        }
                    }
                    Action::Pause => {}
                }
                job.last = Some(server(line));
            }
            None => job.outcome = Outcome::Reply(reply),
        }
    }

    /// What an error reply from `from` asks of the client, if it is a
    /// redirect or a refusal that a retry may cure: a `MOVED` patches its
    /// slot at once and asks for a refresh.
    pub(super) fn redirect(&mut self, line: &str, from: &NodeAddr) -> Option<Action> {
        let code = line.split(' ').next().unwrap_or("");
        match code {
            "MOVED" => {
                let redirect = parse_redirect(line, from)?;
                self.want_refresh();
                // A node redirecting to itself has a stale view: wait for
                // the cluster to settle.
                if &redirect.addr == from {
                    return Some(Action::Pause);
                }
                self.move_slot(redirect.slot, redirect.addr.clone());
                Some(Action::Moved(redirect.addr, redirect.slot))
            }
            "ASK" => {
                let redirect = parse_redirect(line, from)?;
                match redirect.kind {
                    RedirectKind::Ask => Some(Action::Ask(redirect.addr)),
                    RedirectKind::Moved => None,
                }
            }
            "TRYAGAIN" => Some(Action::Pause),
            "CLUSTERDOWN" | "LOADING" | "MASTERDOWN" | "READONLY" => {
                self.want_refresh();
                Some(Action::Pause)
            }
            _ => None,
        }
    }

    /// Every job has an outcome: the caller's replies in order, or the
    /// error that says which commands failed and whether they may have run.
    fn collect(&mut self, plan: &mut Plan, started: Instant) -> Result<Vec<Value>> {
        let mut failed: Vec<usize> = Vec::new();
        let mut failure: Option<Error> = None;
        let mut gave_up: Vec<usize> = Vec::new();
        let mut last: Option<Error> = None;
        let mut attempts = 0;
        // A command split in parts, some of which ran: it may have run.
        let mut partly_ran = vec![false; plan.parts.len()];
        for part in &plan.parts {
            if part.jobs.len() > 1 {
                let jobs = &plan.jobs[part.jobs.clone()];
                if jobs.iter().any(|j| matches!(j.outcome, Outcome::Reply(_))) {
                    partly_ran[jobs[0].caller] = true;
                }
            }
        }
        for job in &mut plan.jobs {
            match std::mem::replace(&mut job.outcome, Outcome::Pending) {
                Outcome::Failed(error) => {
                    push_once(&mut failed, job.caller);
                    failure.get_or_insert(error);
                }
                // Sent again after its node failed (idempotent), until the
                // bounds ran out: it may have run all the same.
                Outcome::GaveUp if job.may_have_run || partly_ran[job.caller] => {
                    push_once(&mut failed, job.caller);
                    let error = job.last.take();
                    failure.get_or_insert_with(|| error.unwrap_or_else(no_answer));
                }
                Outcome::GaveUp => {
                    push_once(&mut gave_up, job.caller);
                    attempts = attempts.max(job.attempts);
                    last = job.last.take().or(last);
                }
                other => job.outcome = other,
            }
        }
        if let Some(source) = failure {
            // Every command without a reply is named, those that gave up
            // (and did not run) too: the caller must not take them as
            // answered.
            failed.extend(gave_up);
            failed.sort_unstable();
            failed.dedup();
            return Err(Error::Unanswered {
                commands: failed.into(),
                source: Box::new(source),
            });
        }
        if !gave_up.is_empty() {
            return Err(Error::GaveUp {
                commands: gave_up.into(),
                attempts: u16::try_from(attempts).unwrap_or(u16::MAX),
                elapsed_ms: millis(started),
                last: Box::new(last.unwrap_or_else(no_answer)),
            });
        }
        self.merge_parts(plan)
    }

    /// Each caller's command's reply, from its parts.
    fn merge_parts(&mut self, plan: &mut Plan) -> Result<Vec<Value>> {
        let mut replies = Vec::with_capacity(plan.parts.len());
        let mut orders = Vec::new();
        for part in &plan.parts {
            if part.merge == Merge::One {
                // The common case: one job, its reply as it is.
                let job = &mut plan.jobs[part.jobs.start];
                replies.push(
                    match std::mem::replace(&mut job.outcome, Outcome::Pending) {
                        Outcome::Reply(v) => v,
                        _ => Value::Nil,
                    },
                );
                continue;
            }
            let mut values = Vec::with_capacity(part.jobs.len());
            orders.clear();
            for job in &mut plan.jobs[part.jobs.clone()] {
                if let Outcome::Reply(v) = std::mem::replace(&mut job.outcome, Outcome::Pending) {
                    values.push(v);
                }
                orders.push(job.key_order.clone());
            }
            replies.push(merge(part.merge, values, &orders, &plan.key_order)?);
        }
        Ok(replies)
    }
}

/// A failure of the connection to a node (not a refusal, a usage error or
/// the caller's own): the node may be failing over.
pub(super) fn transport_failure(e: &Error) -> bool {
    match e {
        Error::NotSent { .. } | Error::Connect { .. } | Error::Broken { .. } => true,
        Error::Handshake { source, .. } => !source.is_server(),
        _ => e.is_io() || e.is_timeout(),
    }
}

/// Adds `i` unless it is the last one added (jobs of one command are
/// adjacent).
fn push_once(list: &mut Vec<usize>, i: usize) {
    if list.last() != Some(&i) {
        list.push(i);
    }
}

/// The last error of a job that has none recorded (cannot happen: a job
/// is retried only for a reason).
fn no_answer() -> Error {
    Error::Config("cluster: no answer was recorded".into())
}

/// Milliseconds since `started`, for [`Error::GaveUp`].
pub(super) fn millis(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// A server error from its line.
pub(super) fn server(line: &str) -> Error {
    Error::Server(Box::new(ServerError::new(line)))
}

/// A copy of an error for each job it affects (`Error` is not `Clone`: an
/// `io::Error` keeps its kind and message).
pub(super) fn copy_error(e: &Error) -> Error {
    match e {
        Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        Error::Timeout { operation } => Error::Timeout { operation },
        Error::Connect { addr, source } => Error::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::NotSent { source } => Error::NotSent {
            source: Box::new(copy_error(source)),
        },
        Error::Interrupted {
            replies,
            requested,
            source,
        } => Error::Interrupted {
            replies: *replies,
            requested: *requested,
            source: Box::new(copy_error(source)),
        },
        Error::Handshake { step, source } => Error::Handshake {
            step,
            source: Box::new(copy_error(source)),
        },
        Error::Protocol(p) => Error::Protocol(p.clone()),
        Error::Server(s) => Error::Server(s.clone()),
        Error::Broken { cause } => Error::Broken {
            cause: cause.clone(),
        },
        other => Error::Config(other.to_string()),
    }
}
