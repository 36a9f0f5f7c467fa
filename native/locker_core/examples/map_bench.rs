//! The store's lease map against `dashmap`, side by side in one run.
//!
//! ```sh
//! cargo run --release -p locker_core --example map_bench            # defaults
//! cargo run --release -p locker_core --example map_bench -- 1000000 5  # keys, rounds
//! ```
//!
//! For each workload it prints the median over the rounds of nanoseconds
//! per operation for [`LeaseMap`] and for `DashMap<K, Lease<V>>` (the same
//! ahash hasher, dashmap's default shard count), and their ratio
//! (`LeaseMap / DashMap`: below 1 means the store's map is faster). Rounds
//! alternate the two maps so that a noisy neighbour hits both. Keys are
//! 24-byte byte strings (the size of a small encoded term), values 16
//! bytes. Workloads:
//!
//! - `hot read`: one thread reads a cache-resident set of 1,024 keys;
//! - `random read`: one thread reads random keys of the whole map;
//! - `readers xT`: T threads read random keys at once (ns per read per
//!   thread);
//! - `write`: one thread replaces the lease of random keys;
//! - `write + readers`: one writer while T-1 threads read (the writer's
//!   ns per write);
//! - `memory`: heap bytes per lease (a counting allocator), keys' own
//!   24 bytes included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use locker_core::{Lease, LeaseMap};

type K = Vec<u8>;
type V = [u8; 16];

/// What the bench needs from a map.
trait Map: Send + Sync + 'static {
    const NAME: &'static str;
    fn new() -> Self;
    fn get(&self, k: &[u8]) -> Option<u64>;
    fn put(&self, k: K, l: Lease<V>);
}

impl Map for LeaseMap<K, V> {
    const NAME: &'static str = "LeaseMap";
    fn new() -> Self {
        LeaseMap::new()
    }
    #[inline]
    fn get(&self, k: &[u8]) -> Option<u64> {
        self.read(k, |l| l.expires_at)
    }
    #[inline]
    fn put(&self, k: K, l: Lease<V>) {
        self.insert(k, l)
    }
}

impl Map for DashMap<K, Lease<V>, ahash::RandomState> {
    const NAME: &'static str = "DashMap";
    fn new() -> Self {
        DashMap::with_hasher(ahash::RandomState::new())
    }
    #[inline]
    fn get(&self, k: &[u8]) -> Option<u64> {
        DashMap::get(self, k).map(|r| r.expires_at)
    }
    #[inline]
    fn put(&self, k: K, l: Lease<V>) {
        self.insert(k, l);
    }
}

fn key(i: u64) -> K {
    let mut k = vec![0u8; 24];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k
}

fn lease(i: u64) -> Lease<V> {
    Lease {
        value: [i as u8; 16],
        expires_at: i + 1_000_000,
        token: i,
    }
}

/// A small xorshift generator: the same sequence for both maps.
struct Rng(u64);
impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn filled<M: Map>(n: u64) -> Arc<M> {
    let m = M::new();
    for i in 0..n {
        m.put(key(i), lease(i));
    }
    Arc::new(m)
}

/// ns per read over `ops` reads of keys drawn by `pick`.
fn reads<M: Map>(m: &M, keys: &[K], ops: usize, seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let n = keys.len() as u64;
    let t = Instant::now();
    let mut hits = 0u64;
    for _ in 0..ops {
        let k = &keys[(rng.next() % n) as usize];
        if black_box(m.get(k)).is_some() {
            hits += 1;
        }
    }
    assert_eq!(hits as usize, ops, "{}: every key is present", M::NAME);
    t.elapsed().as_nanos() as f64 / ops as f64
}

fn concurrent_reads<M: Map>(m: &Arc<M>, keys: &Arc<Vec<K>>, threads: usize, ops: usize) -> f64 {
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (m, keys) = (Arc::clone(m), Arc::clone(keys));
            std::thread::spawn(move || reads(&*m, &keys, ops, 7 + t as u64))
        })
        .collect();
    let per: Vec<f64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    per.iter().sum::<f64>() / per.len() as f64
}

fn writes<M: Map>(m: &M, n: u64, ops: usize, seed: u64) -> f64 {
    let mut rng = Rng(seed | 1);
    let ks: Vec<K> = (0..ops).map(|_| key(rng.next() % n)).collect();
    let t = Instant::now();
    for (i, k) in ks.into_iter().enumerate() {
        m.put(k, lease(i as u64));
    }
    t.elapsed().as_nanos() as f64 / ops as f64
}

fn write_with_readers<M: Map>(
    m: &Arc<M>,
    keys: &Arc<Vec<K>>,
    n: u64,
    readers: usize,
    ops: usize,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..readers)
        .map(|t| {
            let (m, keys, stop) = (Arc::clone(m), Arc::clone(keys), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut rng = Rng(11 + t as u64);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        black_box(m.get(&keys[(rng.next() % keys.len() as u64) as usize]));
                    }
                }
            })
        })
        .collect();
    let r = writes(&**m, n, ops, 5);
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    r
}

/// Counts the bytes live on the heap (the system allocator underneath).
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes per lease of a map of `n` leases (keys' own bytes
/// included, the same for both maps).
fn memory<M: Map>(n: u64) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
    let m = filled::<M>(n);
    let after = LIVE.load(Ordering::Relaxed);
    drop(m);
    after.saturating_sub(before) as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs `f` for each map, alternating, `rounds` times; prints the medians.
fn compare(name: &str, rounds: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) {
    let (mut xa, mut xb) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            xa.push(a());
            xb.push(b());
        } else {
            xb.push(b());
            xa.push(a());
        }
    }
    let (ma, mb) = (median(xa), median(xb));
    println!("{name:<22} {:>10.1} {:>10.1} {:>7.2}x", ma, mb, ma / mb);
}

type Dash = DashMap<K, Lease<V>, ahash::RandomState>;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let threads = std::thread::available_parallelism()
        .map_or(2, |p| p.get())
        .max(2);
    const OPS: usize = 2_000_000;

    println!("{n} keys, {rounds} rounds, {threads} threads; ns per operation (median of rounds)");
    println!(
        "{:<22} {:>10} {:>10} {:>8}",
        "workload",
        LeaseMap::<K, V>::NAME,
        Dash::NAME,
        "ratio"
    );
    let lm = filled::<LeaseMap<K, V>>(n);
    let dm = filled::<Dash>(n);
    let hot: Arc<Vec<K>> = Arc::new((0..1024).map(|i| key(i * (n / 1024).max(1))).collect());
    let all: Arc<Vec<K>> = Arc::new((0..n).map(key).collect());

    compare(
        "hot read",
        rounds,
        || reads(&*lm, &hot, OPS, 3),
        || reads(&*dm, &hot, OPS, 3),
    );
    compare(
        "random read",
        rounds,
        || reads(&*lm, &all, OPS, 3),
        || reads(&*dm, &all, OPS, 3),
    );
    let name = format!("readers x{threads}");
    compare(
        &name,
        rounds,
        || concurrent_reads(&lm, &all, threads, OPS / threads),
        || concurrent_reads(&dm, &all, threads, OPS / threads),
    );
    let name = format!("hot readers x{threads}");
    compare(
        &name,
        rounds,
        || concurrent_reads(&lm, &hot, threads, OPS / threads),
        || concurrent_reads(&dm, &hot, threads, OPS / threads),
    );
    compare(
        "write",
        rounds,
        || writes(&*lm, n, OPS / 4, 9),
        || writes(&*dm, n, OPS / 4, 9),
    );
    compare(
        "write + readers",
        rounds,
        || write_with_readers(&lm, &all, n, threads - 1, OPS / 4),
        || write_with_readers(&dm, &all, n, threads - 1, OPS / 4),
    );
    drop((lm, dm));
    compare(
        "memory (bytes/lease)",
        1,
        || memory::<LeaseMap<K, V>>(n),
        || memory::<Dash>(n),
    );
}
