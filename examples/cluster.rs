//! A tour of respline's Redis Cluster client: opening a cluster, commands
//! routed by key, a pipeline split by node, MGET across slots, a
//! transaction on a {hash tag}, commands sent to every primary, SCAN over
//! the whole cluster.
//!
//! Runs against `REDIS_CLUSTER_URLS` (comma-separated seed URLs) when it is
//! set, otherwise against a private cluster of 3 primaries and 3 replicas
//! it starts on free loopback ports (and stops at the end). It only touches
//! keys under `respline-example:`, and deletes them at the end.
//!
//! ```text
//! cargo run --release --example cluster
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001 cargo run --release --example cluster
//! ```
//!
//! Needs the `cluster` feature (on by default).

#[cfg(feature = "cluster")]
#[path = "common/local_cluster.rs"]
mod local_cluster;

#[cfg(feature = "cluster")]
fn main() -> Result<(), respline::Error> {
    tour::run()
}

#[cfg(not(feature = "cluster"))]
fn main() {
    eprintln!("this example needs the `cluster` feature (on by default)");
}

#[cfg(feature = "cluster")]
mod tour {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use respline::cluster::{key_slot, Route};
    use respline::{cmd, Cluster, Error, Pipeline, WatchOptions};

    use super::local_cluster::LocalCluster;

    const PREFIX: &str = "respline-example:";

    pub fn run() -> Result<(), Error> {
        let started = Instant::now();
        let local = LocalCluster::from_env_or_start();
        if local.is_private() {
            println!(
                "respline cluster tour, against a private cluster (3 primaries, 3 replicas) started in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        } else {
            println!(
                "respline cluster tour, against REDIS_CLUSTER_URLS={}",
                local.urls.join(",")
            );
        }

        // 1. Open: any node(s) of the cluster will do as seeds.
        let mut cluster = Cluster::open(&local.url_refs())?;
        println!(
            "\n1. Cluster::open: the slot map says the primaries are {}",
            cluster.primaries().join(", ")
        );

        single_commands(&mut cluster)?;
        pipeline(&mut cluster)?;
        multi_key(&mut cluster)?;
        transactions(&mut cluster)?;
        every_primary(&mut cluster)?;
        clean_up(&mut cluster)?;
        let refreshes = cluster.refreshes();
        println!(
            "\n8. Slot-map refreshes so far: {} {}",
            refreshes,
            if refreshes == 1 {
                "(the one made by Cluster::open: no MOVED since)"
            } else {
                "(MOVED replies, or failed nodes, asked for more)"
            }
        );
        Ok(())
    }

    fn key(name: &str) -> String {
        format!("{}{}", PREFIX, name)
    }

    /// Where a key lives: its slot and the primary serving it.
    fn place(cluster: &Cluster, key: &str) -> String {
        let slot = key_slot(key.as_bytes());
        format!(
            "slot {:>5} on {}",
            slot,
            cluster.primary_for_slot(slot).unwrap_or_default()
        )
    }

    /// 2. One command goes where its key's slot is served.
    fn single_commands(cluster: &mut Cluster) -> Result<(), Error> {
        println!("\n2. One command: routed by its key's slot");
        let greeting = key("greeting");
        cluster.execute(["SET", &greeting, "hello"])?;
        let value: Option<String> = cluster.query(["GET", &greeting])?;
        println!(
            "   SET/GET {} -> {:?}   ({})",
            greeting,
            value,
            place(cluster, &greeting)
        );
        Ok(())
    }

    /// 3. A pipeline: grouped by node, every node written before any is read.
    fn pipeline(cluster: &mut Cluster) -> Result<(), Error> {
        const N: usize = 10_000;
        println!("\n3. A pipeline of 10,000 SETs, keys spread over all slots");
        let keys: Vec<String> = (0..N).map(|i| key(&format!("item:{}", i))).collect();

        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for k in &keys {
            let node = cluster
                .primary_for_slot(key_slot(k.as_bytes()))
                .unwrap_or_default();
            *per_node.entry(node).or_default() += 1;
        }
        let mut pipe = Pipeline::with_capacity(N * 48);
        for (i, k) in keys.iter().enumerate() {
            pipe.cmd(("SET", k, i));
        }
        let t = Instant::now();
        pipe.execute(cluster)?;
        let set_time = t.elapsed();
        let split: Vec<String> = per_node
            .iter()
            .map(|(node, n)| format!("{} to {}", n, node))
            .collect();
        println!("   split by node : {}", split.join(", "));
        println!(
            "   SET pipeline  : {:>7.2} ms  (each node written once, then each node's replies read)",
            ms(set_time)
        );

        let mut gets = Pipeline::with_capacity(N * 40);
        for k in &keys {
            gets.cmd(("GET", k));
        }
        let t = Instant::now();
        let values: Vec<i64> = gets.query(cluster)?;
        let get_time = t.elapsed();
        assert!(values.iter().enumerate().all(|(i, &v)| v == i as i64));
        println!(
            "   GET pipeline  : {:>7.2} ms  (replies back in the pipeline's order: values[9999] = {})",
            ms(get_time),
            values[N - 1]
        );

        let t = Instant::now();
        for k in keys.iter().take(1000) {
            let _: i64 = cluster.query(["GET", k])?;
        }
        println!(
            "   1,000 GETs one by one: {:.2} ms  (a round trip each)",
            ms(t.elapsed())
        );
        Ok(())
    }

    /// 4. Multi-key commands across slots.
    fn multi_key(cluster: &mut Cluster) -> Result<(), Error> {
        println!("\n4. Keys in several slots");
        let keys: Vec<String> = ["item:1", "item:2", "item:3", "item:42", "missing"]
            .iter()
            .map(|k| key(k))
            .collect();
        let slots: Vec<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
        let values: Vec<Option<i64>> = cluster.query(cmd("MGET").args(&keys))?;
        println!("   MGET of keys in slots {:?} -> {:?}", slots, values);
        println!("   (split per slot, one part per node in one round trip, put back in order; not atomic)");

        let err = cluster
            .query::<i64>(
                cmd("SUNIONSTORE")
                    .arg(key("dest"))
                    .arg(key("a"))
                    .arg(key("b")),
            )
            .unwrap_err();
        println!(
            "   SUNIONSTORE across slots is refused before sending:\n     {}",
            err
        );
        Ok(())
    }

    /// 5. Transactions: every key in one slot, with a {hash tag}.
    fn transactions(cluster: &mut Cluster) -> Result<(), Error> {
        println!("\n5. Transactions on a {{hash tag}}");
        let balance = key("{user:42}:balance");
        let log = key("{user:42}:log");
        println!(
            "   {} and {} share slot {}",
            balance,
            log,
            key_slot(balance.as_bytes())
        );
        let mut tx = Pipeline::transaction();
        tx.cmd(("SET", &balance, 100)).cmd(("DEL", &log));
        tx.execute(cluster)?;

        let (doubled, entries): (i64, i64) =
            cluster.transaction(&[&balance, &log], WatchOptions::default(), |conn, pipe| {
                let now: i64 = conn.query(["GET", &balance])?;
                pipe.cmd(("INCRBY", &balance, now));
                pipe.cmd(("RPUSH", &log, "doubled"));
                Ok(())
            })?;
        println!(
            "   WATCH, GET, MULTI, INCRBY, RPUSH, EXEC on one node: balance = {}, log has {} entry",
            doubled, entries
        );

        let mut cross = Pipeline::transaction();
        cross.cmd(("SET", key("a"), 1)).cmd(("SET", key("b"), 2));
        let err = cross.execute(cluster).unwrap_err();
        println!("   without a tag: {}", err);
        Ok(())
    }

    /// 6 and 7. Commands for every primary, and SCAN over all of them.
    fn every_primary(cluster: &mut Cluster) -> Result<(), Error> {
        println!("\n6. Commands sent to every primary");
        let total: i64 = cluster.query(["DBSIZE"])?;
        let each: Vec<i64> = cluster.on(Route::AllPrimaries, ["DBSIZE"])?;
        println!("   DBSIZE (summed over primaries)  : {}", total);
        println!("   Cluster::on(Route::AllPrimaries): {:?}", each);

        println!("\n7. SCAN over the whole cluster (each primary's cursor in turn)");
        let t = Instant::now();
        let mut count = 0;
        for k in cluster
            .scan::<String>()
            .pattern(format!("{}item:*", PREFIX))
            .count(1000)
        {
            k?;
            count += 1;
        }
        println!(
            "   {}item:* -> {} keys in {:.1} ms",
            PREFIX,
            count,
            ms(t.elapsed())
        );
        Ok(())
    }

    /// Deletes every key this example made: UNLINK with keys in many
    /// slots is split per slot, and the counts summed.
    fn clean_up(cluster: &mut Cluster) -> Result<(), Error> {
        let mut keys = Vec::new();
        for k in cluster
            .scan::<String>()
            .pattern(format!("{}*", PREFIX))
            .count(1000)
        {
            keys.push(k?);
        }
        let mut removed = 0;
        for batch in keys.chunks(1000) {
            let n: i64 = cluster.query(cmd("UNLINK").args(batch))?;
            removed += n;
        }
        println!(
            "   (clean-up: UNLINK of the {} keys found, split per slot: {} removed)",
            keys.len(),
            removed
        );
        Ok(())
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }
}
