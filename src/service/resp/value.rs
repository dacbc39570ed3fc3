//! Values and the containers they live in, each keeping a running estimate of its memory
//! so that the store can account for a change in O(1).

use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use hashbrown::HashTable;

/// Estimated bytes a key costs besides its name and value (entry, index slot, allocator).
pub const ENTRY_OVERHEAD: usize = 72;
const LIST_ITEM: usize = 40;
const HASH_FIELD: usize = 64;
const SET_MEMBER: usize = 40;
const ZSET_MEMBER: usize = 96;

/// The process's hash of a byte string (SipHash with a random key: input from the network
/// cannot force collisions). The bytes alone are hashed, without the length prefix `Hash`
/// adds for slices: one string per hash needs none, and it costs a SipHash round.
pub fn hash_bytes(b: &[u8]) -> u64 {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    h.write(b);
    h.finish()
}

/// Something stored in a [`Dense`] table: it knows its key and the key's hash.
pub trait Keyed {
    /// The key.
    fn key(&self) -> &[u8];
    /// [`hash_bytes`] of the key, kept so that the table never hashes twice.
    fn hash(&self) -> u64;
}

/// A hash table whose items sit in one vector: lookups by key, removal by swapping in the
/// last item, and uniform random picks by position (for sampling and SPOP).
#[derive(Debug)]
pub struct Dense<T> {
    items: Vec<T>,
    index: HashTable<u32>,
}

impl<T> Default for Dense<T> {
    fn default() -> Self {
        Dense {
            items: Vec::new(),
            index: HashTable::new(),
        }
    }
}

impl<T: Keyed> Dense<T> {
    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Position of `key` (whose hash is `hash`).
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let items = &self.items;
        self.index
            .find(hash, |&i| items[i as usize].key() == key)
            .map(|&i| i as usize)
    }

    /// Add an item whose key is not in the table; returns its position.
    pub fn push(&mut self, item: T) -> usize {
        let i = self.items.len();
        let items = &self.items;
        self.index
            .insert_unique(item.hash(), i as u32, |&j| items[j as usize].hash());
        self.items.push(item);
        i
    }

    /// Remove the item at `i`; the last item takes its place.
    pub fn swap_remove(&mut self, i: usize) -> T {
        let hash = self.items[i].hash();
        if let Ok(e) = self.index.find_entry(hash, |&j| j as usize == i) {
            e.remove();
        }
        let last = self.items.len() - 1;
        if i != last {
            let moved = self.items[last].hash();
            if let Some(slot) = self.index.find_mut(moved, |&j| j as usize == last) {
                *slot = i as u32;
            }
        }
        let item = self.items.swap_remove(i);
        if self.items.capacity() > 64 && self.items.len() < self.items.capacity() / 4 {
            self.items.shrink_to(self.items.len() * 2);
            let items = &self.items;
            self.index
                .shrink_to(items.len(), |&j| items[j as usize].hash());
        }
        item
    }

    /// The item at `i`.
    pub fn at(&self, i: usize) -> &T {
        &self.items[i]
    }

    /// The item at `i`, to change anything but its key.
    pub fn at_mut(&mut self, i: usize) -> &mut T {
        &mut self.items[i]
    }

    /// All items, in table order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.items = Vec::new();
        self.index = HashTable::new();
    }
}

/// A value of one of the five types.
#[derive(Debug)]
pub enum Value {
    /// A string (also integers and floats, kept as their decimal text).
    Str(Vec<u8>),
    /// A list.
    List(Box<List>),
    /// A hash of fields to values.
    Hash(Box<Hash>),
    /// A set of members.
    Set(Box<Set>),
    /// A sorted set.
    ZSet(Box<ZSet>),
}

impl Value {
    /// The name TYPE answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// Estimated bytes held.
    pub fn mem(&self) -> usize {
        match self {
            Value::Str(s) => s.len() + 16,
            Value::List(l) => l.mem(),
            Value::Hash(h) => h.mem(),
            Value::Set(s) => s.mem(),
            Value::ZSet(z) => z.mem(),
        }
    }

    /// True for a collection with nothing in it (such a key is deleted).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.len() == 0,
            Value::Set(s) => s.len() == 0,
            Value::ZSet(z) => z.len() == 0,
        }
    }
}

/// A list of byte strings.
#[derive(Debug, Default)]
pub struct List {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl List {
    /// Estimated bytes held.
    pub fn mem(&self) -> usize {
        64 + self.bytes + self.items.len() * LIST_ITEM
    }
    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Add at the head.
    pub fn push_front(&mut self, v: &[u8]) {
        self.bytes += v.len();
        self.items.push_front(v.to_vec());
    }
    /// Add at the tail.
    pub fn push_back(&mut self, v: &[u8]) {
        self.bytes += v.len();
        self.items.push_back(v.to_vec());
    }
    /// Remove from the head.
    pub fn pop_front(&mut self) -> Option<Vec<u8>> {
        let v = self.items.pop_front()?;
        self.bytes -= v.len();
        self.shrink();
        Some(v)
    }
    /// Remove from the tail.
    pub fn pop_back(&mut self) -> Option<Vec<u8>> {
        let v = self.items.pop_back()?;
        self.bytes -= v.len();
        self.shrink();
        Some(v)
    }
    /// Item `i` from the head.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.items.get(i).map(Vec::as_slice)
    }
    /// Replace item `i`.
    pub fn set(&mut self, i: usize, v: &[u8]) {
        let old = &mut self.items[i];
        self.bytes = self.bytes - old.len() + v.len();
        old.clear();
        old.extend_from_slice(v);
    }
    /// Items `start..end` from the head.
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &[u8]> {
        self.items.range(start..end).map(Vec::as_slice)
    }
    /// Keep only items `start..end`.
    pub fn trim(&mut self, start: usize, end: usize) {
        let end = end.min(self.items.len());
        let start = start.min(end);
        self.items.truncate(end);
        self.items.drain(..start);
        self.bytes = self.items.iter().map(Vec::len).sum();
        self.shrink();
    }
    /// Remove up to `count` items equal to `v` (from the head when `count > 0`, from the
    /// tail when `count < 0`, all when 0). Returns how many went.
    pub fn remove(&mut self, count: i64, v: &[u8]) -> usize {
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs().try_into().unwrap_or(usize::MAX)
        };
        let mut removed = 0;
        if count >= 0 {
            let mut i = 0;
            while i < self.items.len() && removed < limit {
                if self.items[i] == v {
                    self.items.remove(i);
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        } else {
            let mut i = self.items.len();
            while i > 0 && removed < limit {
                i -= 1;
                if self.items[i] == v {
                    self.items.remove(i);
                    removed += 1;
                }
            }
        }
        self.bytes -= removed * v.len();
        self.shrink();
        removed
    }
    /// All items, head first.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.items.iter().map(Vec::as_slice)
    }
    fn shrink(&mut self) {
        if self.items.capacity() > 64 && self.items.len() < self.items.capacity() / 4 {
            self.items.shrink_to(self.items.len() * 2);
        }
    }
}

/// A hash field.
#[derive(Debug)]
pub struct Field {
    hash: u64,
    key: Box<[u8]>,
    /// The field's value.
    pub value: Vec<u8>,
}

impl Keyed for Field {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

/// A hash: fields to values.
#[derive(Debug, Default)]
pub struct Hash {
    fields: Dense<Field>,
    bytes: usize,
}

impl Hash {
    /// Estimated bytes held.
    pub fn mem(&self) -> usize {
        64 + self.bytes + self.fields.len() * HASH_FIELD
    }
    /// Fields held.
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    /// The value of `field`.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        let i = self.fields.find(hash_bytes(field), field)?;
        Some(&self.fields.at(i).value)
    }
    /// Set `field`; true if it is new.
    pub fn set(&mut self, field: &[u8], value: &[u8]) -> bool {
        let h = hash_bytes(field);
        match self.fields.find(h, field) {
            Some(i) => {
                let f = self.fields.at_mut(i);
                self.bytes = self.bytes - f.value.len() + value.len();
                f.value.clear();
                f.value.extend_from_slice(value);
                false
            }
            None => {
                self.bytes += field.len() + value.len();
                self.fields.push(Field {
                    hash: h,
                    key: field.into(),
                    value: value.to_vec(),
                });
                true
            }
        }
    }
    /// Remove `field`; true if it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self.fields.find(hash_bytes(field), field) {
            Some(i) => {
                let f = self.fields.swap_remove(i);
                self.bytes -= f.key.len() + f.value.len();
                true
            }
            None => false,
        }
    }
    /// All fields and values.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|f| (&f.key[..], &f.value[..]))
    }
}

/// A set member.
#[derive(Debug)]
pub struct Member {
    hash: u64,
    key: Box<[u8]>,
}

impl Keyed for Member {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

/// A set of byte strings.
#[derive(Debug, Default)]
pub struct Set {
    members: Dense<Member>,
    bytes: usize,
}

impl Set {
    /// Estimated bytes held.
    pub fn mem(&self) -> usize {
        64 + self.bytes + self.members.len() * SET_MEMBER
    }
    /// Members held.
    pub fn len(&self) -> usize {
        self.members.len()
    }
    /// True if `m` is a member.
    pub fn contains(&self, m: &[u8]) -> bool {
        self.members.find(hash_bytes(m), m).is_some()
    }
    /// Add `m`; true if it is new.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        let h = hash_bytes(m);
        if self.members.find(h, m).is_some() {
            return false;
        }
        self.bytes += m.len();
        self.members.push(Member {
            hash: h,
            key: m.into(),
        });
        true
    }
    /// Remove `m`; true if it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self.members.find(hash_bytes(m), m) {
            Some(i) => {
                self.take_at(i);
                true
            }
            None => false,
        }
    }
    /// The member at position `i` (for random picks).
    pub fn at(&self, i: usize) -> &[u8] {
        &self.members.at(i).key
    }
    /// Remove the member at position `i`.
    pub fn take_at(&mut self, i: usize) -> Box<[u8]> {
        let m = self.members.swap_remove(i);
        self.bytes -= m.key.len();
        m.key
    }
    /// All members.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.members.iter().map(|m| &m.key[..])
    }
}

/// A score with a total order (NaN never gets in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted-set member and its score.
#[derive(Debug)]
pub struct ZMember {
    hash: u64,
    key: Box<[u8]>,
    score: f64,
}

impl Keyed for ZMember {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

/// A sorted set: members by name, and by (score, member) in order.
///
/// Rank lookups and index ranges walk the ordered tree from the nearer end: O(n) at worst,
/// where Redis's skip list is O(log n).
#[derive(Debug, Default)]
pub struct ZSet {
    members: Dense<ZMember>,
    order: BTreeSet<(Score, Box<[u8]>)>,
    bytes: usize,
}

impl ZSet {
    /// Estimated bytes held.
    pub fn mem(&self) -> usize {
        64 + self.bytes + self.members.len() * ZSET_MEMBER
    }
    /// Members held.
    pub fn len(&self) -> usize {
        self.members.len()
    }
    /// The score of `m`.
    pub fn score(&self, m: &[u8]) -> Option<f64> {
        let i = self.members.find(hash_bytes(m), m)?;
        Some(self.members.at(i).score)
    }
    /// Set the score of `m`; true if it is new.
    pub fn insert(&mut self, m: &[u8], score: f64) -> bool {
        let h = hash_bytes(m);
        match self.members.find(h, m) {
            Some(i) => {
                let e = self.members.at_mut(i);
                if e.score != score {
                    let key = e.key.clone();
                    self.order.remove(&(Score(e.score), key.clone()));
                    e.score = score;
                    self.order.insert((Score(score), key));
                }
                false
            }
            None => {
                self.bytes += 2 * m.len();
                self.members.push(ZMember {
                    hash: h,
                    key: m.into(),
                    score,
                });
                self.order.insert((Score(score), m.into()));
                true
            }
        }
    }
    /// Remove `m`; true if it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self.members.find(hash_bytes(m), m) {
            Some(i) => {
                let e = self.members.swap_remove(i);
                self.order.remove(&(Score(e.score), e.key));
                self.bytes -= 2 * m.len();
                true
            }
            None => false,
        }
    }
    /// Remove and return the lowest (`max == false`) or highest member.
    pub fn pop(&mut self, max: bool) -> Option<(Box<[u8]>, f64)> {
        let (score, key) = if max {
            self.order.pop_last()?
        } else {
            self.order.pop_first()?
        };
        if let Some(i) = self.members.find(hash_bytes(&key), &key) {
            self.members.swap_remove(i);
        }
        self.bytes -= 2 * key.len();
        Some((key, score.0))
    }
    /// 0-based rank of `m` in ascending order.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let score = self.score(m)?;
        let probe = (Score(score), Box::<[u8]>::from(m));
        Some(self.order.range(..probe).count())
    }
    /// Members in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> {
        self.order.iter().map(|(s, k)| (&k[..], s.0))
    }
    /// Members with `lo <= score <= hi` (each bound exclusive when its flag is set), in
    /// ascending order.
    pub fn by_score(
        &self,
        lo: f64,
        lo_excl: bool,
        hi: f64,
        hi_excl: bool,
    ) -> impl Iterator<Item = (&[u8], f64)> {
        let start = (Score(lo), Box::<[u8]>::from(&[][..]));
        self.order
            .range(start..)
            .map(|(s, k)| (&k[..], s.0))
            .skip_while(move |&(_, s)| s < lo || (lo_excl && s == lo))
            .take_while(move |&(_, s)| s < hi || (!hi_excl && s == hi))
    }
}
