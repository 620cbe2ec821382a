//! The pool's logic with an in-memory recipe (no server): reuse order,
//! closing rules, timeouts, waiters, failures and panics. The real-server
//! tests are in `tests/pool.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;

/// Connections are numbers; what they do is set through the flags.
#[derive(Default)]
struct Fake {
    opened: AtomicU32,
    fail: AtomicBool,
    panic_once: AtomicBool,
    panic_on_return: AtomicBool,
    unhealthy: AtomicBool,
    pinged: AtomicU32,
}

struct FakeConn {
    id: u32,
    dirty: bool,
}

impl Recipe for Arc<Fake> {
    type Conn = FakeConn;

    fn connect(&self) -> Result<FakeConn> {
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("connect panicked");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Config("refused".into()));
        }
        let id = self.opened.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(FakeConn { id, dirty: false })
    }

    fn is_reusable(&self, conn: &FakeConn) -> bool {
        if self.panic_on_return.swap(false, Ordering::SeqCst) {
            panic!("is_reusable panicked");
        }
        !conn.dirty
    }

    fn is_healthy(&self, _: &mut FakeConn, ping: bool) -> bool {
        if ping {
            self.pinged.fetch_add(1, Ordering::SeqCst);
        }
        !self.unhealthy.load(Ordering::SeqCst)
    }
}

fn pool(max: usize) -> (Pool<Arc<Fake>>, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let pool = Pool::builder(Arc::clone(&fake))
        .max_size(max)
        .checkout_timeout(Duration::from_secs(5))
        .check_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    (pool, fake)
}

/// Every opened connection is open or counted as closed or detached.
fn assert_balanced(s: &PoolStats) {
    assert_eq!(
        s.created,
        s.total as u64
            + s.closed_broken
            + s.closed_idle
            + s.closed_expired
            + s.closed_dirty
            + s.detached,
        "{}",
        s
    );
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "waited 5 s for {}", what);
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn pools_and_guards_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Pool<crate::ConnectOptions>>();
    send::<PooledConnection<crate::ConnectOptions>>();
    #[cfg(feature = "cluster")]
    {
        send_sync::<Pool<crate::ClusterOptions>>();
        send::<PooledConnection<crate::ClusterOptions>>();
    }
}

#[test]
fn the_most_recently_given_back_is_reused_first() {
    let (pool, _) = pool(4);
    let a = pool.get().unwrap();
    let b = pool.get().unwrap();
    let (ida, idb) = (a.id, b.id);
    drop(a);
    drop(b);
    assert_eq!(pool.get().unwrap().id, idb);
    let s = pool.stats();
    assert_eq!(
        (s.total, s.idle, s.created, s.reused),
        (2, 2, 2, 1),
        "{}",
        s
    );
    let again = pool.get().unwrap();
    let other = pool.get().unwrap();
    assert_eq!((again.id, other.id), (idb, ida));
}

#[test]
fn a_dirty_connection_is_closed_and_its_room_reused() {
    let (pool, _) = pool(1);
    let mut c = pool.get().unwrap();
    let first = c.id;
    c.dirty = true;
    drop(c);
    let s = pool.stats();
    assert_eq!((s.total, s.idle, s.closed_dirty), (0, 0, 1), "{}", s);
    assert_ne!(pool.get().unwrap().id, first);
    assert_balanced(&pool.stats());
}

#[test]
fn a_connection_from_a_panicking_thread_is_closed() {
    let (pool, _) = pool(1);
    let first = pool.get().unwrap().id;
    let p = pool.clone();
    let joined = thread::spawn(move || {
        let _conn = p.get().unwrap();
        panic!("while holding a connection");
    })
    .join();
    assert!(joined.is_err());
    let s = pool.stats();
    assert_eq!((s.total, s.closed_dirty), (0, 1), "{}", s);
    assert_ne!(pool.get().unwrap().id, first);
}

#[test]
fn an_unhealthy_idle_connection_is_replaced_in_its_slot() {
    let (pool, fake) = pool(1);
    let first = pool.get().unwrap().id;
    fake.unhealthy.store(true, Ordering::SeqCst);
    let c = pool.get().unwrap();
    assert_ne!(c.id, first);
    let s = pool.stats();
    assert_eq!((s.total, s.closed_broken, s.created), (1, 1, 2), "{}", s);
}

#[test]
fn a_connection_given_back_moments_ago_is_not_checked() {
    let fake = Arc::new(Fake::default());
    let pool = Pool::builder(Arc::clone(&fake))
        .check_after_idle(Duration::from_millis(100))
        .build()
        .unwrap();
    let first = pool.get().unwrap().id;
    fake.unhealthy.store(true, Ordering::SeqCst);
    assert_eq!(pool.get().unwrap().id, first);
    thread::sleep(Duration::from_millis(120));
    assert_ne!(pool.get().unwrap().id, first);
    assert_eq!(pool.stats().closed_broken, 1);
}

#[test]
fn a_full_pool_times_out_with_its_figures_and_try_get_fails_at_once() {
    let (pool, _) = pool(2);
    let _a = pool.get().unwrap();
    let _b = pool.get().unwrap();
    let started = Instant::now();
    let e = pool.get_timeout(Duration::from_millis(50)).err().unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(50), "{:?}", waited);
    match e {
        Error::PoolTimeout {
            in_use: 2,
            max: 2,
            waited_ms,
        } => assert!((50..1000).contains(&waited_ms), "{}", waited_ms),
        e => panic!("{:?}", e),
    }
    let started = Instant::now();
    let e = pool.try_get().err().unwrap();
    assert!(started.elapsed() < Duration::from_millis(20));
    assert!(
        matches!(e, Error::PoolTimeout { waited_ms: 0, .. }),
        "{:?}",
        e
    );
    assert_eq!(pool.stats().timed_out, 2);
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let (pool, _) = pool(1);
    let held = pool.get().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..5 {
        let (p, order) = (pool.clone(), Arc::clone(&order));
        threads.push(thread::spawn(move || {
            let _c = p.get().unwrap();
            order.lock().unwrap().push(i);
            thread::sleep(Duration::from_millis(2));
        }));
        wait_until("the thread to queue", || pool.stats().waiting == i + 1);
    }
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(pool.stats().created, 1);
}

#[test]
fn a_failed_connect_gives_its_error_and_passes_the_room_on() {
    let (pool, fake) = pool(1);
    let held = pool.get().unwrap();
    let p = pool.clone();
    let waiter = thread::spawn(move || {
        let started = Instant::now();
        (p.get().map(|c| c.id), started.elapsed())
    });
    wait_until("the waiter", || pool.stats().waiting == 1);
    fake.fail.store(true, Ordering::SeqCst);
    let _ = held.detach();
    let (result, waited) = waiter.join().unwrap();
    // The waiter got the slot at once, and the recipe's own error.
    assert!(matches!(result, Err(Error::Config(_))), "{:?}", result);
    assert!(waited < Duration::from_secs(4), "{:?}", waited);
    let s = pool.stats();
    assert_eq!((s.total, s.connect_failed, s.detached), (0, 1, 1), "{}", s);
    fake.fail.store(false, Ordering::SeqCst);
    assert!(pool.get().is_ok());
}

#[test]
fn a_panicking_recipe_does_not_shrink_the_pool() {
    let (pool, fake) = pool(1);
    fake.panic_once.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| pool.get().map(|c| c.id)));
    assert!(r.is_err());
    assert_eq!(pool.stats().total, 0);
    assert!(pool.get().is_ok());
    // Nor one in is_reusable, when the connection is given back.
    let conn = pool.get().unwrap();
    fake.panic_on_return.store(true, Ordering::SeqCst);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(conn))).is_err());
    assert_eq!(pool.stats().total, 0);
    assert!(pool.get().is_ok());
}

#[test]
fn lifetime_idle_time_and_ping_threshold_are_applied_on_checkout() {
    let fake = Arc::new(Fake::default());
    let pool = Pool::builder(Arc::clone(&fake))
        .max_lifetime(Some(Duration::from_millis(40)))
        .build()
        .unwrap();
    let first = pool.get().unwrap().id;
    thread::sleep(Duration::from_millis(50));
    assert_ne!(pool.get().unwrap().id, first);
    assert_eq!(pool.stats().closed_expired, 1);

    let pool = Pool::builder(Arc::clone(&fake))
        .idle_timeout(Some(Duration::from_millis(300)))
        .ping_after_idle(Some(Duration::from_millis(10)))
        .build()
        .unwrap();
    let first = pool.get().unwrap().id;
    assert_eq!(pool.get().unwrap().id, first);
    assert_eq!(fake.pinged.load(Ordering::SeqCst), 0);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(pool.get().unwrap().id, first);
    assert_eq!(fake.pinged.load(Ordering::SeqCst), 1);
    thread::sleep(Duration::from_millis(350));
    assert_ne!(pool.get().unwrap().id, first);
    let s = pool.stats();
    assert_eq!((s.closed_idle, s.total), (1, 1), "{}", s);
}

#[test]
fn min_idle_is_opened_by_build_and_refilled_on_return() {
    let fake = Arc::new(Fake::default());
    let pool = Pool::builder(Arc::clone(&fake))
        .max_size(4)
        .min_idle(2)
        .build()
        .unwrap();
    let s = pool.stats();
    assert_eq!((s.total, s.idle, s.created), (2, 2, 2), "{}", s);
    let mut a = pool.get().unwrap();
    a.dirty = true;
    drop(a); // closed; the returning thread opens one more
    let s = pool.stats();
    assert_eq!((s.total, s.idle, s.created), (2, 2, 3), "{}", s);
    assert_eq!(pool.close_idle(), 2);
    assert_balanced(&pool.stats());

    fake.fail.store(true, Ordering::SeqCst);
    let failed = Pool::builder(Arc::clone(&fake)).min_idle(1).build();
    assert!(matches!(failed, Err(Error::Config(_))));
}

#[test]
fn bad_settings_are_refused() {
    let fake = Arc::new(Fake::default());
    let e = Pool::builder(Arc::clone(&fake)).max_size(0).build().err();
    assert!(matches!(e, Some(Error::Config(_))), "{:?}", e);
    let e = Pool::builder(fake).max_size(2).min_idle(3).build().err();
    assert!(matches!(e, Some(Error::Config(_))), "{:?}", e);
}

#[test]
fn detach_frees_the_room_for_a_waiter() {
    let (pool, _) = pool(1);
    let held = pool.get().unwrap();
    let p = pool.clone();
    let waiter = thread::spawn(move || p.get().map(|c| c.id));
    wait_until("the waiter", || pool.stats().waiting == 1);
    let kept = held.detach();
    let id = waiter.join().unwrap().unwrap();
    assert_ne!(id, kept.id);
    let s = pool.stats();
    assert_eq!((s.total, s.detached, s.waiting), (1, 1, 0), "{}", s);
    assert_balanced(&s);
}
