//! [`ClusterOptions`]: the seed nodes, the options every node connection
//! is opened with, and the retry bounds.

use std::time::Duration;

use super::topology::NodeAddr;
use super::Cluster;
use crate::connect::{Addr, ConnectOptions};
use crate::error::{Error, Result};

/// How to reach a cluster and how hard to try.
///
/// ```
/// use std::time::Duration;
/// use respline::ClusterOptions;
///
/// let options = ClusterOptions::from_urls(&["redis://app:secret@10.0.0.1:7000", "redis://10.0.0.2:7000"])?
///     .read_from_replicas(true)
///     .max_attempts(8);
/// assert_eq!(options.seeds.len(), 2);
/// assert_eq!(options.node.username.as_deref(), Some("app")); // from the first URL, for every node
/// // let mut cluster = options.connect()?;
/// # Ok::<(), respline::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// The nodes asked for the slot map first. Never forgotten: when every
    /// node the cluster named has moved, they are asked again.
    pub seeds: Vec<Addr>,
    /// How every node connection is opened (credentials, timeouts, RESP3,
    /// client name, limits); its `addr` is replaced by each node's. The
    /// database must be 0: a cluster has no other.
    pub node: ConnectOptions,
    /// How many times one command is tried (redirects and retries
    /// included) before the request gives up with
    /// [`Error::GaveUp`]. Defaults to 16.
    pub max_attempts: u32,
    /// How long one request may keep retrying, pauses included, before it
    /// gives up. Defaults to 5 seconds: about what a replica needs to take
    /// over from a failed primary with a short `cluster-node-timeout`.
    pub retry_window: Duration,
    /// The least time between two full slot-map refreshes (`CLUSTER
    /// SLOTS`): a `MOVED` patches its slot at once and asks for a refresh,
    /// and however many arrive meanwhile, one refresh runs when the
    /// cooldown has passed. While refreshes find the same map (a failover
    /// under way), the cooldown doubles, up to four times this. Defaults
    /// to 200 ms.
    pub refresh_cooldown: Duration,
    /// Send read-only commands to replicas (one of the slot's replicas at
    /// random, each connection set `READONLY`; the primary when none is
    /// up); writes, reads in transactions, and every command of a pipeline
    /// that also writes still go to primaries. Such reads may return data
    /// the primary has already changed. Defaults to `false`.
    pub read_from_replicas: bool,
}

impl ClusterOptions {
    /// Options for these seed nodes, with `node` for every node connection.
    pub fn new(seeds: Vec<Addr>, node: ConnectOptions) -> ClusterOptions {
        ClusterOptions {
            seeds,
            node,
            max_attempts: 16,
            retry_window: Duration::from_secs(5),
            refresh_cooldown: Duration::from_millis(200),
            read_from_replicas: false,
        }
    }

    /// Options from seed URLs (`redis://[user:password@]host:port`): every
    /// URL gives a seed; the first also gives the options for every node
    /// connection (credentials, `?protocol=resp3`, timeouts...).
    pub fn from_urls(urls: &[&str]) -> Result<ClusterOptions> {
        let mut seeds = Vec::with_capacity(urls.len());
        let mut node = None;
        for url in urls {
            let options = ConnectOptions::from_url(url)?;
            seeds.push(options.addr.clone());
            node.get_or_insert(options);
        }
        let node = node.ok_or_else(|| {
            Error::Config("cluster: expected at least one seed URL, found none".into())
        })?;
        Ok(ClusterOptions::new(seeds, node))
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, attempts: u32) -> ClusterOptions {
        self.max_attempts = attempts;
        self
    }

    /// Sets [`retry_window`](Self::retry_window).
    pub fn retry_window(mut self, window: Duration) -> ClusterOptions {
        self.retry_window = window;
        self
    }

    /// Sets [`refresh_cooldown`](Self::refresh_cooldown).
    pub fn refresh_cooldown(mut self, cooldown: Duration) -> ClusterOptions {
        self.refresh_cooldown = cooldown;
        self
    }

    /// Sets [`read_from_replicas`](Self::read_from_replicas).
    pub fn read_from_replicas(mut self, on: bool) -> ClusterOptions {
        self.read_from_replicas = on;
        self
    }

    /// Connects: asks the seeds for the slot map and the command table.
    /// Node connections are opened when first needed.
    pub fn connect(&self) -> Result<Cluster> {
        Cluster::connect(self)
    }

    /// The seeds as node addresses, checked.
    pub(crate) fn seed_nodes(&self) -> Result<Vec<NodeAddr>> {
        if self.node.db != 0 {
            return Err(Error::Config(format!(
                "cluster: expected database 0 (a cluster has no other), found {}",
                self.node.db
            )));
        }
        if self.max_attempts == 0 {
            return Err(Error::Config(
                "cluster: expected max_attempts of at least 1, found 0".into(),
            ));
        }
        if self.seeds.is_empty() {
            return Err(Error::Config(
                "cluster: expected at least one seed node, found none".into(),
            ));
        }
        self.seeds
            .iter()
            .map(|addr| match addr {
                Addr::Tcp { host, port } => Ok(NodeAddr {
                    host: host.clone(),
                    port: *port,
                }),
                Addr::Unix(path) => Err(Error::Config(format!(
                    "cluster: expected TCP seed addresses (cluster nodes talk TCP), found the Unix socket {}",
                    path.display()
                ))),
            })
            .collect()
    }

    /// The options for one node's connection.
    pub(crate) fn for_node(&self, addr: &NodeAddr) -> ConnectOptions {
        let mut options = self.node.clone();
        options.addr = Addr::Tcp {
            host: addr.host.clone(),
            port: addr.port,
        };
        options
    }
}
