//! Connections to replicas: the usable ones a sentinel lists, confirmed
//! with `ROLE`, taken in turn; the primary when none will do.

use std::time::Instant;

use super::lookup::{confirm, Want};
use super::{reply, Inner};
use crate::connect::{Addr, ConnectOptions, Socket};
use crate::connection::Connection;
use crate::error::Result;

impl Inner {
    /// A connection to the next usable replica in turn, or `None` when no
    /// sentinel lists one that answers as a connected replica.
    pub(super) fn find_replica(&self, deadline: Instant) -> Option<Connection<Socket>> {
        let candidates = self.usable_replicas(deadline);
        if candidates.is_empty() {
            return None;
        }
        let first = self.state().next_replica_turn();
        let want = self.options.confirm_role.then_some(Want::Replica);
        (0..candidates.len())
            .map(|k| &candidates[(first + k) % candidates.len()])
            .find_map(|addr| confirm(&self.options.for_node(addr), deadline, want).ok())
    }

    /// The replicas the first sentinel to list any deems usable: not down,
    /// not disconnected, their link to the primary ok.
    fn usable_replicas(&self, deadline: Instant) -> Vec<Addr> {
        let sentinels = self.state().sentinels.clone();
        for (i, sentinel) in sentinels.iter().enumerate() {
            if i > 0 && Instant::now() >= deadline {
                break;
            }
            let options = self.options.for_sentinel(sentinel, deadline);
            match ask_replicas(&options, &self.options.primary_name) {
                Ok(list) if !list.is_empty() => return list,
                _ => continue,
            }
        }
        Vec::new()
    }
}

/// `SENTINEL REPLICAS <name>` (Redis 6.2 and later), or `SENTINEL SLAVES`
/// when a sentinel does not know the former.
fn ask_replicas(options: &ConnectOptions, name: &str) -> Result<Vec<Addr>> {
    let mut conn = Connection::connect(options)?;
    let answer = conn.execute(["SENTINEL", "REPLICAS", name]);
    let value = match answer {
        Ok(v) => v,
        Err(e) if e.server_error().map_or(false, |s| s.code() == "ERR") && !conn.is_broken() => {
            conn.execute(["SENTINEL", "SLAVES", name])?
        }
        Err(e) => return Err(e),
    };
    reply::usable_instances(&value, true)
}
