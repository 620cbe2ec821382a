//! Sharded pub/sub on a cluster: each shard channel is subscribed on the
//! primary serving its slot, and subscribed again where the slot went when
//! it moves.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::nodes::Nodes;
use super::slot::key_slot;
use super::topology::NodeAddr;
use super::Cluster;
use crate::cmd::ToArg;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::pubsub::{Message, Subscriber};

/// How long each node is listened to in turn while several are.
const SLICE: Duration = Duration::from_millis(10);

/// A subscriber to shard channels (`SSUBSCRIBE`) across a cluster, made by
/// [`Cluster::shard_subscriber`].
///
/// Each channel is subscribed on the primary that serves its slot, one
/// connection per such primary. When a slot moves (a node then ends the
/// subscription with an unsolicited `sunsubscribe`), or a node fails, the
/// channels are subscribed again on the slot's new primary, within the
/// cluster's retry bounds; messages published in between are lost, as
/// Redis pub/sub is at-most-once.
///
/// With several nodes, [`receive`](ShardSubscriber::receive) listens to
/// each in turn for 10 ms, so a message may wait that long per node.
///
/// ```no_run
/// # let cluster = respline::Cluster::open(&["redis://127.0.0.1:7000"])?;
/// let mut sub = cluster.shard_subscriber();
/// sub.ssubscribe(&["orders:{eu}", "orders:{us}"])?;
/// while let Some(message) = sub.receive(Some(std::time::Duration::from_secs(1)))? {
///     println!("{}: {}", message.channel_str()?, message.payload_str()?);
/// }
/// # Ok::<(), respline::Error>(())
/// ```
pub struct ShardSubscriber {
    nodes: Nodes,
    subs: HashMap<NodeAddr, Subscriber>,
    /// Every channel asked for, with its slot.
    wanted: BTreeMap<Vec<u8>, u16>,
    /// Which node each channel is subscribed on.
    on: BTreeMap<Vec<u8>, NodeAddr>,
    /// Messages received while subscribing.
    queue: VecDeque<Message>,
    /// The next node to listen to.
    turn: usize,
}

impl Cluster {
    /// A subscriber to shard channels, with its own node connections and a
    /// copy of this cluster's slot map.
    pub fn shard_subscriber(&self) -> ShardSubscriber {
        ShardSubscriber {
            nodes: self.nodes.sibling(),
            subs: HashMap::new(),
            wanted: BTreeMap::new(),
            on: BTreeMap::new(),
            queue: VecDeque::new(),
            turn: 0,
        }
    }
}

impl ShardSubscriber {
    /// Subscribes to shard channels, each on the primary serving its slot,
    /// and waits for every confirmation.
    pub fn ssubscribe<C: ToArg>(&mut self, channels: &[C]) -> Result<()> {
        for c in channels {
            let name = arg_bytes(c);
            let slot = key_slot(&name);
            self.wanted.insert(name, slot);
        }
        self.settle()
    }

    /// Unsubscribes from shard channels.
    pub fn sunsubscribe<C: ToArg>(&mut self, channels: &[C]) -> Result<()> {
        for c in channels {
            let name = arg_bytes(c);
            self.wanted.remove(&name);
            if let Some(addr) = self.on.remove(&name) {
                if let Some(sub) = self.subs.get_mut(&addr) {
                    if sub.sunsubscribe(&[&name[..]]).is_err() {
                        self.subs.remove(&addr);
                    }
                }
            }
        }
        Ok(())
    }

    /// The channels subscribed to, as asked.
    pub fn channels(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.wanted.keys().map(|c| &c[..])
    }

    /// Waits up to `timeout` (`None`: for ever) for the next message from
    /// any node; `Ok(None)` when the time passed. Moved slots and failed
    /// nodes are handled on the way.
    pub fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<Message>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(Some(m));
            }
            self.settle()?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let mut addrs: Vec<NodeAddr> = self.subs.keys().cloned().collect();
            if addrs.is_empty() {
                std::thread::sleep(left.unwrap_or(SLICE).min(SLICE));
                continue;
            }
            addrs.sort();
            let addr = addrs[self.turn % addrs.len()].clone();
            self.turn = self.turn.wrapping_add(1);
            let wait = match (addrs.len(), left) {
                (1, left) => left,
                (_, Some(left)) => Some(left.min(SLICE)),
                (_, None) => Some(SLICE),
            };
            let sub = match self.subs.get_mut(&addr) {
                Some(sub) => sub,
                None => continue,
            };
            match sub.receive(wait) {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                // The node failed: subscribe its channels again where
                // their slots are now.
                Err(_) => self.lost(&addr),
            }
        }
    }

    /// Subscribes every wanted channel that is not subscribed on its slot's
    /// primary, there, within the retry bounds.
    fn settle(&mut self) -> Result<()> {
        self.notice_dropped();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut pauses = 0u32;
        loop {
            let missing = self.missing();
            if missing.is_empty() {
                return Ok(());
            }
            attempts += 1;
            let mut last = None;
            for (addr, channels) in missing {
                if let Err(e) = self.subscribe_on(&addr, &channels) {
                    if let Some(s) = e.server_error() {
                        let line = format!("{} {}", s.code(), s.message());
                        if self.nodes.redirect(&line, &addr).is_none() {
                            return Err(e);
                        }
                    } else {
                        self.lost(&addr);
                    }
                    last = Some(e);
                }
            }
            if let Some(e) = last {
                let options = &self.nodes.options;
                if attempts >= options.max_attempts || started.elapsed() >= options.retry_window {
                    return Err(Error::GaveUp {
                        commands: vec![0].into(),
                        attempts: u16::try_from(attempts).unwrap_or(u16::MAX),
                        elapsed_ms: super::run::millis(started),
                        last: Box::new(e),
                    });
                }
                pauses += 1;
                self.nodes.pause(pauses, started);
                self.nodes.refresh_if_due();
            }
        }
    }

    /// The wanted channels not subscribed where their slot is served,
    /// grouped by that node.
    fn missing(&mut self) -> Vec<(NodeAddr, Vec<Vec<u8>>)> {
        let mut by_node: BTreeMap<NodeAddr, Vec<Vec<u8>>> = BTreeMap::new();
        for (channel, &slot) in &self.wanted {
            let owner = match self.nodes.map.primary(slot) {
                Some(a) => a.clone(),
                None => {
                    self.nodes.want_refresh();
                    continue;
                }
            };
            if self.on.get(channel) != Some(&owner) {
                by_node.entry(owner).or_default().push(channel.clone());
            }
        }
        by_node.into_iter().collect()
    }

    /// Subscribes `channels` on `addr`, after unsubscribing them where they
    /// were.
    fn subscribe_on(&mut self, addr: &NodeAddr, channels: &[Vec<u8>]) -> Result<()> {
        for c in channels {
            if let Some(old) = self.on.remove(c) {
                if let Some(sub) = self.subs.get_mut(&old) {
                    if sub.sunsubscribe(&[&c[..]]).is_err() {
                        self.subs.remove(&old);
                    }
                }
            }
        }
        if !self.subs.contains_key(addr) {
            let conn = Connection::connect(&self.nodes.options.for_node(addr))?;
            self.subs.insert(addr.clone(), Subscriber::new(conn));
        }
        let sub = self.subs.get_mut(addr).expect("inserted above");
        // One SSUBSCRIBE per slot: Redis refuses channels of several.
        let mut by_slot: BTreeMap<u16, Vec<&[u8]>> = BTreeMap::new();
        for c in channels {
            by_slot.entry(key_slot(c)).or_default().push(&c[..]);
        }
        for names in by_slot.values() {
            sub.ssubscribe(names)?;
        }
        while let Some(m) = sub.receive(Some(Duration::ZERO))? {
            self.queue.push_back(m);
        }
        for c in channels {
            self.on.insert(c.clone(), addr.clone());
        }
        Ok(())
    }

    /// Channels a node stopped serving (an unsolicited `sunsubscribe`
    /// after their slot moved) are no longer subscribed there.
    fn notice_dropped(&mut self) {
        let mut dropped = Vec::new();
        for (channel, addr) in &self.on {
            let held = self
                .subs
                .get(addr)
                .map_or(false, |s| s.shard_channels().any(|c| c == &channel[..]));
            if !held {
                dropped.push(channel.clone());
            }
        }
        if !dropped.is_empty() {
            self.nodes.want_refresh();
            self.nodes.refresh_if_due();
        }
        for c in dropped {
            self.on.remove(&c);
        }
    }

    /// A node failed: its channels are to be subscribed again.
    fn lost(&mut self, addr: &NodeAddr) {
        self.subs.remove(addr);
        self.on.retain(|_, a| a != addr);
        self.nodes.note_failed(addr);
        self.nodes.refresh_if_due();
    }
}

/// One argument's bytes.
fn arg_bytes<C: ToArg>(c: &C) -> Vec<u8> {
    let mut cmd = crate::cmd::Cmd::new();
    cmd.push_arg(c);
    let bytes = cmd.iter().next().map(<[u8]>::to_vec).unwrap_or_default();
    bytes
}
