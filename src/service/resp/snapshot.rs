//! Snapshots: the keyspace written to one file, atomically, and read back at start.
//!
//! # Format (version 1)
//!
//! All integers are little-endian. A *blob* is a `u64` length followed by that many bytes.
//!
//! ```text
//! header   "RPSNAP" (6 bytes), version u16 = 1
//! record   type u8, expires u64 (Unix ms, 0 = never), key blob, then by type:
//!            0 string   value blob
//!            1 list     count u64, count × item blob (head first)
//!            2 hash     count u64, count × (field blob, value blob)
//!            3 set      count u64, count × member blob
//!            4 zset     count u64, count × (member blob, score f64 as its IEEE-754 bits)
//! footer   0xFF, number of records u64, CRC-32 (IEEE) u32 of every byte before it
//! ```
//!
//! A file is written to `FILE.tmp-PID` beside the target, synced, renamed over the target,
//! and the directory is synced: a crash leaves the old snapshot or the new one, never a
//! mix. At start the whole file is checked (checksum, structure, record count) before a key
//! is served; a file that fails is refused with one line saying why.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::store::{unix_ms, Keyspace, Shard, SHARDS};
use super::value::{Hash, List, Set, Value, ZSet};

const MAGIC: &[u8; 6] = b"RPSNAP";
const VERSION: u16 = 1;
const END: u8 = 0xFF;

/// A writer that keeps the CRC of what passed through it.
struct Checked<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Append the live records of one shard to `out`; returns how many.
fn encode_shard(shard: &Shard, now: u64, out: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    for i in 0..shard.len() {
        if shard.is_expired(i, now) {
            continue;
        }
        let e = shard.at(i);
        let ty = match &e.value {
            Value::Str(_) => 0u8,
            Value::List(_) => 1,
            Value::Hash(_) => 2,
            Value::Set(_) => 3,
            Value::ZSet(_) => 4,
        };
        out.push(ty);
        out.extend_from_slice(&e.expires.to_le_bytes());
        blob(out, e.key());
        match &e.value {
            Value::Str(s) => blob(out, s),
            Value::List(l) => {
                out.extend_from_slice(&(l.len() as u64).to_le_bytes());
                for item in l.iter() {
                    blob(out, item);
                }
            }
            Value::Hash(h) => {
                out.extend_from_slice(&(h.len() as u64).to_le_bytes());
                for (f, v) in h.iter() {
                    blob(out, f);
                    blob(out, v);
                }
            }
            Value::Set(s) => {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                for m in s.iter() {
                    blob(out, m);
                }
            }
            Value::ZSet(z) => {
                out.extend_from_slice(&(z.len() as u64).to_le_bytes());
                for (m, score) in z.iter() {
                    blob(out, m);
                    out.extend_from_slice(&score.to_bits().to_le_bytes());
                }
            }
        }
        n += 1;
    }
    n
}

/// Whether a snapshot can be written at `path`: its temporary file is created and removed,
/// so a missing directory or one without write permission is found at start, not at the
/// first SAVE or at shutdown (when the data would be lost).
pub(crate) fn check_writable(path: &Path) -> io::Result<()> {
    let mut name = temp_path(path).into_os_string();
    name.push("-check");
    let probe = PathBuf::from(name);
    // A name of its own, created new: nothing another writer has is truncated or removed.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

/// The temporary file a snapshot of `path` is written to first.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Write the keyspace to `path` atomically. With `whole`, every shard is locked for the
/// whole write (one instant of the keyspace, as SAVE promises); otherwise one shard at a
/// time, so commands go on meanwhile (BGSAVE, where each key is as it was when its shard
/// was written). Returns the number of keys written.
///
/// # Errors
/// Any failure to create, write, sync or rename; the temporary file is removed then.
pub fn save(ks: &Keyspace, path: &Path, whole: bool) -> io::Result<u64> {
    let tmp = temp_path(path);
    let result = write_file(ks, &tmp, whole).and_then(|n| {
        fs::rename(&tmp, path)?;
        sync_dir(path)?;
        Ok(n)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_file(ks: &Keyspace, tmp: &Path, whole: bool) -> io::Result<u64> {
    let file = File::create(tmp)?;
    let mut w = Checked {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    let now = unix_ms();
    let mut buf = Vec::new();
    let mut count = 0;
    if whole {
        let mut db = ks.lock_all(now);
        for s in 0..SHARDS {
            buf.clear();
            count += encode_shard(db.shard(s), now, &mut buf);
            w.write_all(&buf)?;
        }
    } else {
        for s in 0..SHARDS {
            buf.clear();
            count += ks.with_shard(s, |sh| encode_shard(sh, now, &mut buf));
            w.write_all(&buf)?;
            if buf.capacity() > 64 << 20 {
                buf = Vec::new();
            }
        }
    }
    w.write_all(&[END])?;
    w.write_all(&count.to_le_bytes())?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(count)
}

#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; the rename itself is durable on NTFS.
    Ok(())
}

/// Reads a snapshot's bytes, saying where it went wrong.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!(
                "{what} at byte {} runs past the end of the records",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn blob(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u64(what)?;
        self.take(n, what)
    }
    fn count(&mut self, what: &str, min_item: u64) -> Result<u64, String> {
        let n = self.u64(what)?;
        // Each item takes at least `min_item` bytes: a count that cannot fit is corrupt,
        // and is found out before anything is built for it.
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_item) > left {
            return Err(format!("{what} of {n} at byte {} cannot fit", self.pos));
        }
        Ok(n)
    }
}

/// Read the snapshot at `path` into a new keyspace. A missing file gives an empty one.
///
/// # Errors
/// One line saying why the file is refused (unreadable, truncated, bad checksum, bad
/// structure).
pub fn load(path: &Path, ks: &Keyspace) -> Result<u64, String> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    decode(&data, ks).map_err(|e| format!("snapshot {} refused: {e}", path.display()))
}

/// Check and load snapshot bytes into `ks` (which the caller discards on error).
pub fn decode(data: &[u8], ks: &Keyspace) -> Result<u64, String> {
    let head = MAGIC.len() + 2;
    let foot = 1 + 8 + 4;
    if data.len() < head + foot {
        return Err(format!("truncated ({} bytes)", data.len()));
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err("not a ringport snapshot (bad magic)".into());
    }
    let version = u16::from_le_bytes([data[6], data[7]]);
    if version != VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let body = data.len() - 4;
    let stored = u32::from_le_bytes(data[body..].try_into().expect("4 bytes"));
    if crc32fast::hash(&data[..body]) != stored {
        return Err("checksum mismatch (truncated or corrupt)".into());
    }
    let mut r = Reader {
        data: &data[..body],
        pos: head,
    };
    let now = unix_ms();
    let mut records = 0u64;
    loop {
        let ty = r.u8("record type")?;
        if ty == END {
            break;
        }
        let at = r.pos;
        let expires = r.u64("expiry")?;
        if expires > i64::MAX as u64 {
            // No command sets one: PXAT and the others keep expiries to 63 bits.
            return Err(format!("expiry {expires} out of range at byte {at}"));
        }
        let key = r.blob("key")?;
        let value = match ty {
            0 => Value::Str(r.blob("string")?.to_vec()),
            1 => {
                let mut l = List::default();
                for _ in 0..r.count("list length", 8)? {
                    l.push_back(r.blob("list item")?);
                }
                Value::List(Box::new(l))
            }
            2 => {
                let mut h = Hash::default();
                for _ in 0..r.count("hash length", 16)? {
                    let f = r.blob("hash field")?;
                    h.set(f, r.blob("hash value")?);
                }
                Value::Hash(Box::new(h))
            }
            3 => {
                let mut s = Set::default();
                for _ in 0..r.count("set length", 8)? {
                    s.insert(r.blob("set member")?);
                }
                Value::Set(Box::new(s))
            }
            4 => {
                let mut z = ZSet::default();
                for _ in 0..r.count("zset length", 16)? {
                    let m = r.blob("zset member")?;
                    let score = f64::from_bits(r.u64("zset score")?);
                    if score.is_nan() {
                        return Err(format!("NaN score at byte {}", r.pos));
                    }
                    z.insert(m, score);
                }
                Value::ZSet(Box::new(z))
            }
            other => return Err(format!("unknown record type {other} at byte {}", r.pos)),
        };
        records += 1;
        if value.is_empty_collection() || (expires != 0 && expires <= now) {
            continue;
        }
        let mut db = ks.lock_keys(std::iter::once(key), now);
        if db.exists(key) {
            return Err(format!(
                "key {:?} appears twice",
                String::from_utf8_lossy(key)
            ));
        }
        db.put(key, value, expires);
    }
    let count = r.u64("record count")?;
    if count != records {
        return Err(format!("footer says {count} records, file has {records}"));
    }
    if r.pos != body {
        return Err(format!("{} stray bytes after the footer", body - r.pos));
    }
    ks.mark_saved(ks.writes());
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::resp::store::EvictionPolicy;

    fn sample() -> Keyspace {
        let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
        let now = unix_ms();
        let mut db = ks.lock_all(now);
        db.put(b"s", Value::Str(b"v".to_vec()), now + 100_000);
        let mut l = List::default();
        l.push_back(b"a");
        l.push_back(b"b");
        db.put(b"l", Value::List(Box::new(l)), 0);
        let mut z = ZSet::default();
        z.insert(b"m", 1.5);
        db.put(b"z", Value::ZSet(Box::new(z)), 0);
        drop(db);
        ks
    }

    fn encode(ks: &Keyspace) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("ringport-snap-{}", random_name()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dump.rps");
        save(ks, &path, false).unwrap();
        let data = fs::read(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        data
    }

    fn random_name() -> u64 {
        crate::service::resp::store::random()
    }

    #[test]
    fn round_trip() {
        let data = encode(&sample());
        let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
        assert_eq!(decode(&data, &ks), Ok(3));
        let mut db = ks.lock_all(unix_ms());
        assert!(matches!(db.get(b"s"), Some(Value::Str(v)) if v == b"v"));
        assert!(db.entry(b"s").unwrap().expires > 0);
        assert!(matches!(db.get(b"l"), Some(Value::List(l)) if l.len() == 2));
        assert!(matches!(db.get(b"z"), Some(Value::ZSet(z)) if z.score(b"m") == Some(1.5)));
    }

    #[test]
    fn an_expiry_past_63_bits_is_refused() {
        let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
        ks.lock_all(unix_ms())
            .put(b"k", Value::Str(b"v".to_vec()), 1 << 63);
        let data = encode(&ks);
        let err = decode(&data, &Keyspace::new(0, EvictionPolicy::NoEviction)).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let data = encode(&sample());
        for n in 0..data.len() {
            let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
            assert!(decode(&data[..n], &ks).is_err(), "truncated to {n}");
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            let ks = Keyspace::new(0, EvictionPolicy::NoEviction);
            assert!(decode(&bad, &ks).is_err(), "flipped byte {i}");
        }
    }
}
