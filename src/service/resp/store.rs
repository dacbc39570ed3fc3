//! The keyspace: shards of keys, expiry, memory accounting and eviction.
//!
//! Keys are spread over [`SHARDS`] shards by hash, each behind its own mutex. A command
//! locks the shards of every key it touches, in ascending shard order, before it looks at
//! any of them, and holds them until it has answered: every command is atomic, and two
//! commands never wait for each other in a cycle. Commands that see the whole keyspace
//! (FLUSHALL, a transaction holding one) lock every shard in the same order.
//!
//! Within a shard, keys live in a [`Dense`] table, so a uniformly random key is one index
//! away: eviction samples keys that way, and active expiry samples the shard's list of keys
//! that have a time to live. Expired keys also go the moment they are looked up.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::value::{hash_bytes, Dense, Keyed, Value, ENTRY_OVERHEAD};

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

/// Keys sampled per eviction.
const EVICTION_SAMPLES: usize = 5;
/// Keys with a time to live sampled per round of active expiry.
const EXPIRY_SAMPLES: usize = 20;

/// What happens to writes when memory is over `--maxmemory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// Refuse commands that may add memory with `-OOM`.
    #[default]
    NoEviction,
    /// Evict the least recently used of a few sampled keys.
    AllKeysLru,
    /// Like `AllKeysLru`, among keys with a time to live only.
    VolatileLru,
    /// Evict a random key.
    AllKeysRandom,
}

impl EvictionPolicy {
    /// The name used by `--maxmemory-policy` and CONFIG GET.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::AllKeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllKeysRandom => "allkeys-random",
        }
    }
}

impl std::str::FromStr for EvictionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "noeviction" => Ok(EvictionPolicy::NoEviction),
            "allkeys-lru" => Ok(EvictionPolicy::AllKeysLru),
            "volatile-lru" => Ok(EvictionPolicy::VolatileLru),
            "allkeys-random" => Ok(EvictionPolicy::AllKeysRandom),
            other => Err(format!(
                "unknown policy '{other}' (expected noeviction, allkeys-lru, volatile-lru or allkeys-random)"
            )),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fast per-thread random number (for sampling; not for anything secret).
pub fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            hash_bytes(format!("{:?}{}", std::thread::current().id(), unix_ms()).as_bytes()) | 1
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A uniformly random index below `n` (`n > 0`).
pub fn random_below(n: usize) -> usize {
    (random() % n as u64) as usize
}

/// A key, its value, and its bookkeeping.
#[derive(Debug)]
pub struct Entry {
    hash: u64,
    key: Box<[u8]>,
    /// The value.
    pub value: Value,
    /// When the key expires, in Unix milliseconds; 0 for never.
    pub expires: u64,
    /// Position in the shard's list of keys with a time to live (`u32::MAX`: none).
    vpos: u32,
    /// The LRU clock when the key was last used.
    lru: u32,
}

impl Keyed for Entry {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

impl Entry {
    /// The key's name.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn mem(&self) -> usize {
        ENTRY_OVERHEAD + self.key.len() + self.value.mem()
    }
}

/// One shard: its keys, the list of those with a time to live, and counters.
#[derive(Debug, Default)]
pub struct Shard {
    table: Dense<Entry>,
    volatile: Vec<u32>,
    used: usize,
    /// Lookups that found a key.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Keys removed because their time passed.
    pub expired: u64,
    /// Keys evicted for memory.
    pub evicted: u64,
    /// Writes (counted per shard: a shared counter would bounce between I/O threads).
    pub writes: u64,
}

impl Shard {
    /// Keys held (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the shard holds no key.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Keys with a time to live.
    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    /// The entry at position `i`.
    pub fn at(&self, i: usize) -> &Entry {
        self.table.at(i)
    }

    /// True when the entry at `i` has expired at `now`.
    pub fn is_expired(&self, i: usize, now: u64) -> bool {
        let e = self.table.at(i);
        e.expires != 0 && e.expires <= now
    }

    /// Position of the live entry for `key`; an expired one is removed on the way.
    fn find_live(&mut self, hash: u64, key: &[u8], now: u64) -> Option<usize> {
        let i = self.table.find(hash, key)?;
        if self.is_expired(i, now) {
            self.remove_at(i);
            self.expired += 1;
            return None;
        }
        Some(i)
    }

    /// Add a key that is not in the shard.
    pub fn insert(&mut self, hash: u64, key: &[u8], value: Value, expires: u64, lru: u32) {
        let e = Entry {
            hash,
            key: key.into(),
            value,
            expires: 0,
            vpos: u32::MAX,
            lru,
        };
        self.used += e.mem();
        let i = self.table.push(e);
        self.set_expires(i, expires);
    }

    /// Remove the entry at `i`.
    pub fn remove_at(&mut self, i: usize) -> Entry {
        // Out of the expiry index first; the entry handed back keeps its expiry (RENAME
        // moves it to the new key).
        let expires = self.table.at(i).expires;
        self.set_expires(i, 0);
        let mut e = self.table.swap_remove(i);
        e.expires = expires;
        self.used -= e.mem();
        if i < self.table.len() {
            // The last entry moved into `i`.
            let v = self.table.at(i).vpos;
            if v != u32::MAX {
                self.volatile[v as usize] = i as u32;
            }
        }
        e
    }

    /// Set (non-zero) or clear (0) the expiry of the entry at `i`.
    pub fn set_expires(&mut self, i: usize, at: u64) {
        let e = self.table.at_mut(i);
        e.expires = at;
        match (at != 0, e.vpos != u32::MAX) {
            (true, false) => {
                e.vpos = self.volatile.len() as u32;
                self.volatile.push(i as u32);
            }
            (false, true) => {
                let v = e.vpos as usize;
                e.vpos = u32::MAX;
                self.volatile.swap_remove(v);
                if v < self.volatile.len() {
                    let moved = self.volatile[v] as usize;
                    self.table.at_mut(moved).vpos = v as u32;
                }
            }
            _ => {}
        }
    }

    /// Remove every key; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.table.len();
        self.table.clear();
        self.volatile = Vec::new();
        self.used = 0;
        n
    }

    /// Remove expired keys among a few sampled ones with a time to live, repeating while
    /// many of the sample had expired (at most `rounds` times). Returns how many went.
    fn expire_sample(&mut self, now: u64, rounds: usize) -> usize {
        let mut total = 0;
        for _ in 0..rounds {
            if self.volatile.is_empty() {
                break;
            }
            let mut gone = 0;
            for _ in 0..EXPIRY_SAMPLES.min(self.volatile.len()) {
                if self.volatile.is_empty() {
                    break;
                }
                let i = self.volatile[random_below(self.volatile.len())] as usize;
                if self.is_expired(i, now) {
                    self.remove_at(i);
                    gone += 1;
                }
            }
            self.expired += gone as u64;
            total += gone;
            // Fewer than a quarter expired: the rest can wait for the next cycle.
            if gone * 4 < EXPIRY_SAMPLES {
                break;
            }
        }
        total
    }

    /// Evict one key chosen by `policy`; false if the shard has no candidate.
    fn evict_one(&mut self, policy: EvictionPolicy, clock: u32) -> bool {
        let candidates = match policy {
            EvictionPolicy::NoEviction => 0,
            EvictionPolicy::VolatileLru => self.volatile.len(),
            _ => self.table.len(),
        };
        if candidates == 0 {
            return false;
        }
        let pick = |s: &Shard| -> usize {
            let r = random_below(candidates);
            if policy == EvictionPolicy::VolatileLru {
                s.volatile[r] as usize
            } else {
                r
            }
        };
        let victim = if policy == EvictionPolicy::AllKeysRandom {
            pick(self)
        } else {
            let mut best = pick(self);
            for _ in 1..EVICTION_SAMPLES.min(candidates) {
                let i = pick(self);
                let idle = |j: usize| clock.wrapping_sub(self.table.at(j).lru);
                if idle(i) > idle(best) {
                    best = i;
                }
            }
            best
        };
        self.remove_at(victim);
        self.evicted += 1;
        true
    }
}

/// The shards, the memory estimate and the limits.
pub struct Keyspace {
    shards: Box<[Mutex<Shard>]>,
    used: AtomicI64,
    maxmemory: u64,
    policy: EvictionPolicy,
    /// Writes counted when the last snapshot started.
    saved_writes: AtomicU64,
    epoch_ms: u64,
}

impl Keyspace {
    /// An empty keyspace with a memory limit (0: none) and a policy.
    pub fn new(maxmemory: u64, policy: EvictionPolicy) -> Keyspace {
        Keyspace {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            used: AtomicI64::new(0),
            maxmemory,
            policy,
            saved_writes: AtomicU64::new(0),
            epoch_ms: unix_ms(),
        }
    }

    /// The memory limit (0: none).
    pub fn maxmemory(&self) -> u64 {
        self.maxmemory
    }

    /// The eviction policy.
    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// Estimated bytes held by keys and values.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).max(0) as u64
    }

    /// The shard a key hash belongs to.
    pub fn shard_of(hash: u64) -> usize {
        (hash >> 50) as usize & (SHARDS - 1)
    }

    fn lock(&self, i: usize) -> Held<'_> {
        let guard = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = guard.used;
        Held {
            idx: i,
            guard,
            before,
        }
    }

    /// The LRU clock: milliseconds since start, wrapping.
    fn clock(&self, now: u64) -> u32 {
        now.wrapping_sub(self.epoch_ms) as u32
    }

    fn db<'a>(&'a self, guards: Guards<'a>, now: u64) -> Db<'a> {
        Db {
            ks: self,
            guards,
            now,
            lru: self.clock(now),
            cache: [(0, 0, 0); 4],
            cached: 0,
        }
    }

    /// Lock the shards of `keys` (in ascending order) for one atomic command.
    pub fn lock_keys<'a, 'k>(&'a self, keys: impl Iterator<Item = &'k [u8]>, now: u64) -> Db<'a> {
        let mut cache = [(0usize, 0usize, 0u64); 4];
        let mut cached = 0;
        let mut first = None;
        let mut more: Vec<usize> = Vec::new();
        for k in keys {
            let h = hash_bytes(k);
            if cached < cache.len() {
                cache[cached] = (k.as_ptr() as usize, k.len(), h);
                cached += 1;
            }
            let s = Self::shard_of(h);
            match first {
                None => first = Some(s),
                Some(f) if f == s => {}
                Some(f) => {
                    if more.is_empty() {
                        more.push(f);
                    }
                    more.push(s);
                }
            }
        }
        let guards = if more.is_empty() {
            match first {
                Some(s) => Guards::One(self.lock(s)),
                None => Guards::None,
            }
        } else {
            more.sort_unstable();
            more.dedup();
            Guards::Many(more.into_iter().map(|s| self.lock(s)).collect())
        };
        let mut db = self.db(guards, now);
        db.cache = cache;
        db.cached = cached;
        db
    }

    /// Lock the shards listed (any order, duplicates allowed), ascending.
    pub fn lock_shards(&self, mut shards: Vec<usize>, now: u64) -> Db<'_> {
        shards.sort_unstable();
        shards.dedup();
        let guards = Guards::Many(shards.into_iter().map(|s| self.lock(s)).collect());
        self.db(guards, now)
    }

    /// Lock every shard, for a command that sees the whole keyspace at once.
    pub fn lock_all(&self, now: u64) -> Db<'_> {
        self.db(
            Guards::Many((0..SHARDS).map(|s| self.lock(s)).collect()),
            now,
        )
    }

    /// A view that locks one shard at a time as it is visited (commands that walk the
    /// keyspace without needing one instant: SCAN, KEYS, DBSIZE).
    pub fn lock_lazy(&self, now: u64) -> Db<'_> {
        self.db(Guards::Lazy(None), now)
    }

    /// A view with nothing locked (commands that touch no key).
    pub fn lock_none(&self, now: u64) -> Db<'_> {
        self.db(Guards::None, now)
    }

    /// True when a command that may add memory may run: under the limit, or brought under
    /// it by eviction.
    pub fn make_room(&self, now: u64) -> bool {
        if self.maxmemory == 0 || self.used() <= self.maxmemory {
            return true;
        }
        if self.policy == EvictionPolicy::NoEviction {
            return false;
        }
        let clock = self.clock(now);
        let mut empty_tries = 0;
        while self.used() > self.maxmemory {
            let mut held = self.lock(random_below(SHARDS));
            let evicted = held.guard.evict_one(self.policy, clock);
            self.settle(held);
            if evicted {
                empty_tries = 0;
            } else {
                empty_tries += 1;
                if empty_tries >= 2 * SHARDS {
                    // Nothing left to evict (e.g. volatile-lru and no key with a TTL).
                    return self.used() <= self.maxmemory;
                }
            }
        }
        true
    }

    /// One cycle of active expiry over every shard; returns the keys removed.
    pub fn expire_cycle(&self, now: u64) -> usize {
        let mut total = 0;
        for s in 0..SHARDS {
            let mut held = self.lock(s);
            total += held.guard.expire_sample(now, 16);
            self.settle(held);
        }
        total
    }

    /// Writes since the start.
    pub fn writes(&self) -> u64 {
        self.sum(|s| s.writes)
    }

    /// Writes counted when the last snapshot started.
    pub fn saved_writes(&self) -> u64 {
        self.saved_writes.load(Ordering::Relaxed)
    }

    /// A snapshot that started when `writes` writes had been made was written.
    pub fn mark_saved(&self, writes: u64) {
        self.saved_writes.fetch_max(writes, Ordering::Relaxed);
    }

    /// Sum `f` over every shard, locking one at a time.
    pub fn sum(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        (0..SHARDS)
            .map(|s| {
                f(&self.shards[s]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner))
            })
            .sum()
    }

    /// Run `f` on shard `s`, locked (snapshots, loading).
    pub fn with_shard<R>(&self, s: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut held = self.lock(s);
        let r = f(&mut held.guard);
        self.settle(held);
        r
    }

    /// The memory estimate recomputed from every entry (for checking the running one).
    #[cfg(test)]
    pub fn recount(&self) -> u64 {
        self.sum(|s| s.table.iter().map(|e| e.mem() as u64).sum())
    }

    fn settle(&self, held: Held<'_>) {
        let delta = held.guard.used as i64 - held.before as i64;
        if delta != 0 {
            self.used.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

struct Held<'a> {
    idx: usize,
    guard: MutexGuard<'a, Shard>,
    before: usize,
}

enum Guards<'a> {
    None,
    One(Held<'a>),
    /// Sorted by shard index.
    Many(Vec<Held<'a>>),
    Lazy(Option<Held<'a>>),
}

/// The shards one command holds, and what it needs to look at keys.
pub struct Db<'a> {
    ks: &'a Keyspace,
    guards: Guards<'a>,
    /// The time the command runs at, in Unix milliseconds.
    pub now: u64,
    lru: u32,
    /// Hashes computed while locking, by argument address and length.
    cache: [(usize, usize, u64); 4],
    cached: usize,
}

impl Drop for Db<'_> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.guards, Guards::None) {
            Guards::None | Guards::Lazy(None) => {}
            Guards::One(h) | Guards::Lazy(Some(h)) => self.ks.settle(h),
            Guards::Many(v) => {
                for h in v {
                    self.ks.settle(h);
                }
            }
        }
    }
}

impl<'a> Db<'a> {
    fn hash(&self, key: &[u8]) -> u64 {
        let id = (key.as_ptr() as usize, key.len());
        for &(p, l, h) in &self.cache[..self.cached] {
            if (p, l) == id {
                return h;
            }
        }
        hash_bytes(key)
    }

    /// Shard `s`, which this command must hold (or, in a lazy view, now takes).
    ///
    /// # Panics
    /// When the command did not lock `s`: a bug in its key specification.
    pub fn shard(&mut self, s: usize) -> &mut Shard {
        match &mut self.guards {
            Guards::One(h) if h.idx == s => &mut h.guard,
            Guards::Many(v) => match v.binary_search_by_key(&s, |h| h.idx) {
                Ok(i) => &mut v[i].guard,
                Err(_) => panic!("shard {s} is not locked by this command"),
            },
            Guards::Lazy(slot) => {
                if slot.as_ref().is_none_or(|h| h.idx != s) {
                    if let Some(old) = slot.take() {
                        self.ks.settle(old);
                    }
                    *slot = Some(self.ks.lock(s));
                }
                &mut slot.as_mut().expect("just locked").guard
            }
            _ => panic!("shard {s} is not locked by this command"),
        }
    }

    fn locate(&mut self, key: &[u8]) -> (u64, &mut Shard) {
        let h = self.hash(key);
        (h, self.shard(Keyspace::shard_of(h)))
    }

    /// The live entry for `key`, marked as used (counts a hit or a miss).
    pub fn entry(&mut self, key: &[u8]) -> Option<&Entry> {
        let (now, lru) = (self.now, self.lru);
        let (h, sh) = self.locate(key);
        match sh.find_live(h, key, now) {
            Some(i) => {
                sh.hits += 1;
                let e = sh.table.at_mut(i);
                e.lru = lru;
                Some(&*e)
            }
            None => {
                sh.misses += 1;
                None
            }
        }
    }

    /// The value of `key`, if it exists.
    pub fn get(&mut self, key: &[u8]) -> Option<&Value> {
        self.entry(key).map(|e| &e.value)
    }

    /// True if `key` exists (without counting a hit or a miss).
    pub fn exists(&mut self, key: &[u8]) -> bool {
        let now = self.now;
        let (h, sh) = self.locate(key);
        sh.find_live(h, key, now).is_some()
    }

    /// Read or change `key`: `f` gets its value (`None` if absent) and expiry (Unix ms, 0
    /// for none) and may replace, change or remove either. A collection left empty is
    /// deleted; memory is accounted.
    pub fn write<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Option<Value>, &mut u64) -> R) -> R {
        let (now, lru) = (self.now, self.lru);
        let (h, sh) = self.locate(key);
        sh.writes += 1;
        match sh.find_live(h, key, now) {
            Some(i) => {
                let e = sh.table.at_mut(i);
                let before = e.mem();
                let mut v = Some(std::mem::replace(&mut e.value, Value::Str(Vec::new())));
                let mut exp = e.expires;
                let r = f(&mut v, &mut exp);
                let keep = v.as_ref().is_some_and(|v| !v.is_empty_collection());
                if let Some(v) = v {
                    e.value = v;
                }
                e.lru = lru;
                let after = e.mem();
                sh.used = sh.used + after - before;
                if keep {
                    if exp != sh.table.at(i).expires {
                        sh.set_expires(i, exp);
                    }
                } else {
                    sh.remove_at(i);
                }
                r
            }
            None => {
                let mut v = None;
                let mut exp = 0;
                let r = f(&mut v, &mut exp);
                if let Some(v) = v.filter(|v| !v.is_empty_collection()) {
                    sh.insert(h, key, v, exp, lru);
                }
                r
            }
        }
    }

    /// Remove `key` and return its value and expiry.
    pub fn take(&mut self, key: &[u8]) -> Option<(Value, u64)> {
        let now = self.now;
        let (h, sh) = self.locate(key);
        let i = sh.find_live(h, key, now)?;
        let e = sh.remove_at(i);
        sh.writes += 1;
        Some((e.value, e.expires))
    }

    /// Remove `key`; true if it existed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.take(key).is_some()
    }

    /// Store `value` under `key` with `expires` (0: none), replacing what was there.
    pub fn put(&mut self, key: &[u8], value: Value, expires: u64) {
        let mut value = Some(value);
        self.write(key, |v, exp| {
            *v = value.take();
            *exp = expires;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u8]) -> Value {
        Value::Str(v.to_vec())
    }

    #[test]
    fn write_read_delete_and_memory() {
        let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
        let now = unix_ms();
        {
            let mut db = ks.lock_keys([&b"a"[..]].into_iter(), now);
            db.put(b"a", s(b"hello"), 0);
            assert!(matches!(db.get(b"a"), Some(Value::Str(v)) if v == b"hello"));
        }
        assert!(ks.used() > 0);
        {
            let mut db = ks.lock_keys([&b"a"[..]].into_iter(), now);
            assert!(db.delete(b"a"));
            assert!(!db.delete(b"a"));
        }
        assert_eq!(ks.used(), 0);
    }

    #[test]
    fn expired_keys_go_on_access_and_by_sampling() {
        let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
        let now = unix_ms();
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("k{i}").into_bytes()).collect();
        for k in &keys {
            let mut db = ks.lock_keys([&k[..]].into_iter(), now);
            db.put(k, s(b"v"), now + 10);
        }
        assert_eq!(ks.sum(|s| s.len() as u64), 1000);
        {
            let mut db = ks.lock_keys([&keys[0][..]].into_iter(), now + 11);
            assert!(db.get(&keys[0]).is_none());
        }
        let mut rounds = 0;
        while ks.sum(|s| s.len() as u64) > 0 {
            ks.expire_cycle(now + 11);
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert_eq!(ks.used(), 0);
        assert_eq!(ks.sum(|s| s.expired), 1000);
    }

    #[test]
    fn eviction_brings_memory_under_the_limit() {
        let ks = Keyspace::new(50_000, EvictionPolicy::AllKeysLru);
        let now = unix_ms();
        for i in 0..2000 {
            let k = format!("key{i}").into_bytes();
            assert!(ks.make_room(now));
            let mut db = ks.lock_keys([&k[..]].into_iter(), now);
            db.put(&k, s(&[b'x'; 100]), 0);
        }
        assert!(ks.make_room(now));
        assert!(ks.used() <= 50_000);
        assert!(ks.sum(|s| s.evicted) > 1000);
        let none = Keyspace::new(1000, EvictionPolicy::VolatileLru);
        {
            let mut db = none.lock_keys([&b"big"[..]].into_iter(), now);
            db.put(b"big", s(&[0; 2000]), 0);
        }
        assert!(!none.make_room(now), "no key with a TTL to evict");
    }
}
