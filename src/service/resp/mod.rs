//! `resp`: an in-memory store that speaks the Redis protocol (RESP2).
//!
//! redis-cli, redis-benchmark and ordinary Redis client libraries work with it. The parts:
//!
//! - `protocol`: requests parsed where they lie in the connection's input (multibulk and
//!   inline), replies written straight into the answer buffer;
//! - `commands`: the command table and the commands, by family;
//! - `store`: one keyspace shared by every I/O thread and worker, in shards behind
//!   mutexes; expiry (on access and by sampling), memory accounting and eviction;
//! - `pubsub`: subscribers kept as connection handles, so a message crosses I/O threads;
//! - `snapshot`: the keyspace written to a file atomically and read back at start.
//!
//! # Atomicity
//!
//! A command locks the shards of the keys it names, in shard order, and holds them until
//! it has answered; MULTI/EXEC locks the shards of every queued command before the first
//! runs. So every command, and every transaction, is one step: other connections see all
//! of it or none of it.
//!
//! # Output order for subscribers
//!
//! Messages reach a subscriber through its connection's [`Handle`]. To keep them in order
//! with the connection's own replies, a connection that subscribes first lets the output it
//! has already written drain to the driver ([`Conn::notify_drained`]), then registers and
//! sends everything — confirmations and later replies — through its handle. When it has
//! unsubscribed from everything it asks to be notified ([`Handle::notify`]): the
//! notification arrives after everything sent before it, and replies go back to the
//! connection's own output.

mod commands;
mod glob;
mod protocol;
mod pubsub;
mod snapshot;
mod store;
#[cfg(test)]
mod tests;
mod value;

pub use store::EvictionPolicy;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use commands::{flag, Ctx, Spec};
use protocol::{reply, Args, Frame, OwnedArgs, Step};
use pubsub::{PubSub, Subscriptions};
use store::{unix_ms, Keyspace};

use super::{Conn, ConnInfo, Handle, Service};

/// Default `--proto-max-bulk-len`: the longest single argument.
pub const DEFAULT_MAX_BULK: usize = 512 * 1024 * 1024;
/// Replies held for a connection while its subscription is being set up; past this its
/// input waits.
const DEFERRED_MAX: usize = 1 << 20;
/// Output gathered in one call before it is handed to the connection.
const FLUSH_AT: usize = 64 * 1024;
/// Replies written to a connection in a window past which it runs no more commands until
/// its output drains, when they are over [`AMPLIFIED`] times the input they answer: a
/// client that pipelines commands with big replies and does not read them (600 `GET`s of a
/// 1 MiB value fit in 13 KB) makes the server hold about this (plus one reply) per
/// connection, not every reply. Commands whose replies are about as big as they are run on
/// (a new window starts): their output pauses reading as any output does, so their input
/// does not pile up here.
const OUTPUT_PAUSE: usize = 1 << 20;
/// How many times the input they answer a window's replies must be to hold the commands.
const AMPLIFIED: usize = 16;
/// How often expired keys are sampled and removed.
const EXPIRY_PERIOD: Duration = Duration::from_millis(100);

/// Settings of the store.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    maxmemory: u64,
    policy: EvictionPolicy,
    proto_max_bulk_len: usize,
    snapshot: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            maxmemory: 0,
            policy: EvictionPolicy::NoEviction,
            proto_max_bulk_len: DEFAULT_MAX_BULK,
            snapshot: None,
        }
    }
}

/// Configures and opens a [`Resp`] store.
#[derive(Debug, Clone, Default)]
pub struct RespBuilder {
    config: Config,
}

impl RespBuilder {
    /// Memory limit for keys and values in bytes (estimated); 0, the default, for none.
    pub fn maxmemory(&mut self, bytes: u64) -> &mut Self {
        self.config.maxmemory = bytes;
        self
    }

    /// What happens to writes over the memory limit (default `noeviction`).
    pub fn maxmemory_policy(&mut self, policy: EvictionPolicy) -> &mut Self {
        self.config.policy = policy;
        self
    }

    /// The longest single argument a request may carry (default 512 MiB).
    pub fn proto_max_bulk_len(&mut self, bytes: usize) -> &mut Self {
        self.config.proto_max_bulk_len = bytes.max(1);
        self
    }

    /// A snapshot file: loaded by [`RespBuilder::build`] if it exists, written by SAVE,
    /// BGSAVE and [`Store::save`].
    pub fn snapshot(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.config.snapshot = Some(path.into());
        self
    }

    /// Open the store: load the snapshot, if one is configured and exists, and start the
    /// thread that removes expired keys.
    ///
    /// # Errors
    /// `InvalidData` with a one-line reason when the snapshot is unreadable, truncated or
    /// corrupt (nothing of it is loaded then); the error creating a file beside it when one
    /// cannot be written there (a missing directory, no permission); errors spawning the
    /// thread.
    pub fn build(&self) -> io::Result<Resp> {
        let ks = Keyspace::new(self.config.maxmemory, self.config.policy);
        let mut loaded = 0;
        if let Some(path) = &self.config.snapshot {
            snapshot::check_writable(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("the snapshot cannot be written at {}: {e}", path.display()),
                )
            })?;
            loaded = snapshot::load(path, &ks)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            ks,
            pubsub: PubSub::default(),
            config: self.config.clone(),
            clients: AtomicUsize::new(0),
            listed: Mutex::default(),
            connections: AtomicU64::new(0),
            commands: (0..COUNTERS).map(|_| Counter::default()).collect(),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            persist: Persist {
                saving: Mutex::new(()),
                bgsave_running: AtomicBool::new(false),
                last_save: AtomicU64::new(unix_ms() / 1000),
                last_ok: AtomicBool::new(true),
            },
            loaded,
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("ringport-expiry".into())
            .spawn(move || expiry_loop(&weak))?;
        Ok(Resp { shared })
    }
}

/// Remove expired keys that nobody reads, until the store is dropped.
fn expiry_loop(shared: &Weak<Shared>) {
    loop {
        std::thread::sleep(EXPIRY_PERIOD);
        let Some(s) = shared.upgrade() else {
            return;
        };
        s.ks.expire_cycle(unix_ms());
    }
}

/// Per-thread-ish counters, so that counting commands does not bounce one cache line
/// between I/O threads.
const COUNTERS: usize = 16;

#[derive(Default)]
#[repr(align(64))]
struct Counter(AtomicU64);

/// Snapshot bookkeeping.
struct Persist {
    /// Held while a snapshot is written: one at a time.
    saving: Mutex<()>,
    bgsave_running: AtomicBool,
    /// Unix seconds of the last successful save (or of the start).
    last_save: AtomicU64,
    last_ok: AtomicBool,
}

/// What every connection of one store shares.
pub(crate) struct Shared {
    me: Weak<Shared>,
    ks: Keyspace,
    pubsub: PubSub,
    config: Config,
    clients: AtomicUsize,
    /// Every client, for CLIENT LIST.
    listed: Mutex<BTreeMap<u64, Arc<Listed>>>,
    connections: AtomicU64,
    commands: Box<[Counter]>,
    next_id: AtomicU64,
    started: Instant,
    persist: Persist,
    loaded: u64,
}

impl Shared {
    fn commands(&self) -> u64 {
        self.commands
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Write the snapshot now (the caller holds `persist.saving`).
    fn save_now(&self, whole: bool) -> io::Result<u64> {
        let Some(path) = &self.config.snapshot else {
            return Ok(0);
        };
        let writes = self.ks.writes();
        let r = snapshot::save(&self.ks, path, whole);
        self.persist.last_ok.store(r.is_ok(), Ordering::Relaxed);
        if r.is_ok() {
            self.persist
                .last_save
                .store(unix_ms() / 1000, Ordering::Relaxed);
            self.ks.mark_saved(writes);
        }
        r
    }
}

/// The Redis-protocol service. Cheap to clone: clones share one store.
#[derive(Clone)]
pub struct Resp {
    shared: Arc<Shared>,
}

impl Resp {
    /// Configure a store.
    pub fn builder() -> RespBuilder {
        RespBuilder::default()
    }

    /// A handle on the store, for the program that runs the server: it saves the snapshot
    /// after the server has stopped.
    pub fn store(&self) -> Store {
        Store {
            shared: self.shared.clone(),
        }
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resp")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// The store behind a [`Resp`] service, outside the server.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Write the snapshot, if one is configured, waiting for a background save to finish
    /// first. Returns the number of keys written (`None` without a snapshot file).
    ///
    /// Called after [`crate::Server::wait`] returns, every acknowledged write is in it.
    ///
    /// # Errors
    /// Failure to write, sync or rename the file.
    pub fn save(&self) -> io::Result<Option<u64>> {
        if self.shared.config.snapshot.is_none() {
            return Ok(None);
        }
        let _guard = self
            .shared
            .persist
            .saving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.save_now(true).map(Some)
    }

    /// Keys loaded from the snapshot at start.
    pub fn loaded(&self) -> u64 {
        self.shared.loaded
    }

    /// Keys held now (expired ones not yet removed included).
    pub fn len(&self) -> u64 {
        self.shared.ks.sum(|s| s.len() as u64)
    }

    /// True when the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held by keys and values.
    pub fn used_memory(&self) -> u64 {
        self.shared.ks.used()
    }
}

/// A transaction being queued.
#[derive(Default)]
pub(crate) struct Multi {
    queued: Vec<(&'static Spec, OwnedArgs)>,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    failed: bool,
}

/// The state of a connection that commands see.
pub(crate) struct Client {
    id: u64,
    /// What other connections see of this one (CLIENT LIST), its name and address included.
    listed: Arc<Listed>,
    /// What `listed` shows now, to write it only when it changes.
    shown: Shown,
    handle: Handle,
    subs: Option<Box<Subscriptions>>,
    /// SUBSCRIBE and friends changed `subs` since the registry last matched it.
    subs_changed: bool,
    multi: Option<Box<Multi>>,
    /// QUIT (or a protocol error): close once the reply is out.
    quit: bool,
    /// CLIENT REPLY OFF: commands run without replies until CLIENT REPLY ON (or RESET).
    reply_off: bool,
    /// CLIENT REPLY SKIP: replies still to drop, that command's own and the next one's.
    reply_skip: u8,
    /// The command run last.
    last: Option<&'static Spec>,
}

impl Client {
    fn subscribed(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.count() > 0)
    }

    /// This client's state as CLIENT LIST shows it.
    fn shown(&self) -> Shown {
        Shown {
            cmd: self.last.map(|s| s.name),
            sub: self.subs.as_ref().map_or(0, |s| s.channels.len()),
            psub: self.subs.as_ref().map_or(0, |s| s.patterns.len()),
            multi: self.multi.as_ref().map_or(-1, |m| m.queued.len() as i64),
        }
    }

    /// Make what other connections see of this one current: after each batch of commands
    /// (a time stamp, and a lock only when something else changed).
    fn update_listed(&mut self, now_ms: u64) {
        self.listed.last_ms.store(now_ms, Ordering::Relaxed);
        let shown = self.shown();
        if shown != self.shown {
            self.shown = shown;
            self.listed.state().1 = shown;
        }
    }
}

/// What CLIENT LIST shows of a connection, readable by every other.
pub(crate) struct Listed {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    /// When it connected and when its last commands ran, in milliseconds since the epoch.
    since_ms: u64,
    last_ms: AtomicU64,
    /// Its name (CLIENT SETNAME) and its state as of its last batch of commands.
    state: Mutex<(Option<Box<[u8]>>, Shown)>,
}

impl Listed {
    fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> Arc<Listed> {
        let now = unix_ms();
        Arc::new(Listed {
            id,
            peer,
            local,
            since_ms: now,
            last_ms: AtomicU64::new(now),
            state: Mutex::new((None, Shown::NEW)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Option<Box<[u8]>>, Shown)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client's state as CLIENT LIST shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shown {
    /// The last command run.
    cmd: Option<&'static str>,
    sub: usize,
    psub: usize,
    /// Commands queued in MULTI, -1 outside one.
    multi: i64,
}

impl Shown {
    const NEW: Shown = Shown {
        cmd: None,
        sub: 0,
        psub: 0,
        multi: -1,
    };
}

/// Where a connection's replies go.
enum Route {
    /// Its own output (the usual case).
    Conn,
    /// Held here until earlier output has drained, then sent through the handle.
    Entering(Vec<u8>),
    /// Through its handle, in order with published messages.
    Handle,
    /// Through its handle until the notification that follows them arrives.
    Leaving,
}

/// One connection.
pub struct Session {
    client: Client,
    frame: Frame,
    route: Route,
    /// Handle notifications asked for and not yet arrived.
    notifies: u32,
    /// Reply bytes made in this window (see [`OUTPUT_PAUSE`]).
    window_out: usize,
    /// Request bytes those replies answer.
    window_in: usize,
    /// [`Conn::notify_drained`] was asked for and [`Service::drained`] has not come yet.
    drain_asked: bool,
    /// Input that was held back (output over [`OUTPUT_PAUSE`]) when the peer's EOF came,
    /// and how much of it has run: its commands run as the output drains.
    after_eof: Option<(Vec<u8>, usize)>,
    /// No longer counted among the clients nor subscribed (QUIT, or the close).
    left: bool,
    /// The store, which counts and lists the client until it leaves.
    shared: Arc<Shared>,
}

impl Session {
    /// The client is gone for the server: no longer counted, listed nor subscribed. Once:
    /// at QUIT, at the close, or when the session is dropped without one (a service panic).
    fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let shared = &self.shared;
        shared.clients.fetch_sub(1, Ordering::Relaxed);
        shared
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.client.id);
        if let Some(subs) = self.client.subs.take() {
            shared.pubsub.remove(self.client.id, &subs);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Session {
    /// True when this window's replies are over [`OUTPUT_PAUSE`] and [`AMPLIFIED`] times
    /// the requests they answer: run no more commands until [`Service::drained`]. Replies
    /// not that amplified start a new window.
    fn held_for_output(&mut self, conn: &mut Conn<'_>) -> bool {
        if !matches!(self.route, Route::Conn) || self.window_out < OUTPUT_PAUSE {
            return false;
        }
        if self.window_out < AMPLIFIED.saturating_mul(self.window_in) {
            self.window_out = 0;
            self.window_in = 0;
            return false;
        }
        if !self.drain_asked {
            self.drain_asked = true;
            // Read no more meanwhile: held input would grow while the output is under the
            // limit (the peer's socket buffers taking it).
            conn.pause_reading_until_drained();
        }
        true
    }
}

thread_local! {
    /// Reply buffer reused by every call on this thread.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

const NOT_IN_SUBSCRIBED: &str =
    "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// As Redis: an EXEC refused before it runs discards the transaction (if one is open) and
/// says so, whether or not one was.
fn exec_refused(client: &mut Client, out: &mut Vec<u8>, why: &str) {
    client.multi = None;
    reply::error(
        out,
        &format!("EXECABORT Transaction discarded because of: {why}"),
    );
}

impl Resp {
    /// Run one request, writing its reply into `out`.
    fn execute(&self, client: &mut Client, args: Args<'_>, out: &mut Vec<u8>, now: u64) {
        // Clients tend to repeat a command: try the last one before the table.
        let name = args.get(0);
        let spec = match client.last {
            Some(s) if s.name.as_bytes().eq_ignore_ascii_case(name) => Some(s),
            _ => commands::lookup(name),
        };
        client.last = spec;
        let Some(spec) = spec else {
            if let Some(m) = &mut client.multi {
                m.failed = true;
            }
            commands::unknown_command(args).write(out);
            return;
        };
        if !spec.arity_ok(args.len()) {
            if spec.name == "exec" {
                return exec_refused(client, out, "wrong number of arguments for 'exec' command");
            }
            if let Some(m) = &mut client.multi {
                m.failed = true;
            }
            commands::wrong_arity(spec.name).write(out);
            return;
        }
        // An unknown subcommand, or one with the wrong number of arguments, is refused
        // here, as Redis refuses it: before it is queued or checked against the context.
        let sub = match spec.subcommand(args) {
            Ok(sub) => sub,
            Err(e) => {
                if let Some(m) = &mut client.multi {
                    m.failed = true;
                }
                e.write(out);
                return;
            }
        };
        let ks = &self.shared.ks;
        if let Some(m) = &mut client.multi {
            if !spec.has(flag::TXN_CONTROL) {
                if spec.has(flag::NO_MULTI) {
                    m.failed = true;
                    reply::error(out, "ERR Command not allowed inside a transaction");
                } else if spec.has(flag::DENYOOM) && !ks.make_room(now) {
                    m.failed = true;
                    reply::error(out, commands::OOM);
                } else {
                    m.queued.push((spec, args.to_owned()));
                    reply::simple(out, "QUEUED");
                }
                return;
            }
        }
        if client.subscribed() && !spec.has(flag::PUBSUB_OK) {
            let why = format!(
                "Can't execute '{}': {NOT_IN_SUBSCRIBED}",
                commands::full_name(spec, sub)
            );
            if spec.name == "exec" {
                return exec_refused(client, out, &why);
            }
            reply::error(out, &format!("ERR {why}"));
            return;
        }
        if spec.has(flag::DENYOOM) && !ks.make_room(now) {
            reply::error(out, commands::OOM);
            return;
        }
        let mut db = if spec.has(flag::WHOLE) {
            ks.lock_all(now)
        } else if spec.has(flag::WALK) {
            ks.lock_lazy(now)
        } else if spec.keys.0 == 0 {
            ks.lock_none(now)
        } else {
            ks.lock_keys(spec.keys(args), now)
        };
        let mark = out.len();
        let mut ctx = Ctx {
            shared: &self.shared,
            db: &mut db,
            out,
            client,
        };
        if let Err(e) = spec.run(&mut ctx, args) {
            out.truncate(mark);
            e.write(out);
        }
    }

    /// Parse and run every whole request in `input`; returns the bytes consumed.
    fn serve(
        &self,
        s: &mut Session,
        input: &[u8],
        conn: &mut Conn<'_>,
        out: &mut Vec<u8>,
    ) -> usize {
        let now = unix_ms();
        let max_bulk = self.shared.config.proto_max_bulk_len;
        let mut used = 0;
        let mut count = 0u64;
        while used < input.len() {
            if let Route::Entering(held) = &s.route {
                if held.len() + out.len() > DEFERRED_MAX {
                    break;
                }
            }
            if s.held_for_output(conn) {
                break;
            }
            let rest = &input[used..];
            match s.frame.parse(rest, max_bulk) {
                Step::Incomplete => break,
                Step::Error(e) => {
                    if !s.client.reply_off && s.client.reply_skip == 0 {
                        reply::error(out, &format!("ERR Protocol error: {e}"));
                    }
                    s.frame.reset();
                    s.client.quit = true;
                    used = input.len();
                    break;
                }
                Step::Complete(n) => {
                    let before = out.len();
                    let args = s.frame.view(rest);
                    if !args.is_empty() {
                        let mark = out.len();
                        let skip_before = s.client.reply_skip;
                        self.execute(&mut s.client, args, out, now);
                        count += 1;
                        if s.client.reply_off {
                            out.truncate(mark);
                        } else if s.client.reply_skip > 0 {
                            // A SKIP inside an EXEC silences the command after it, not the
                            // EXEC (whose array holds the SKIP's OK).
                            let exec = s.client.last.is_some_and(|spec| spec.name == "exec");
                            if !(exec && skip_before == 0) {
                                out.truncate(mark);
                            }
                            s.client.reply_skip -= 1;
                        }
                        if s.client.subs_changed
                            && matches!(s.route, Route::Conn)
                            && s.client.subscribed()
                        {
                            // Earlier replies go the usual way; from here on, replies wait
                            // for them to drain, then go through the handle.
                            conn.write(&out[..mark]);
                            s.route = Route::Entering(out[mark..].to_vec());
                            out.clear();
                            conn.notify_drained();
                            // A subscriber waits for messages: its silence is not idleness.
                            conn.exempt_from_idle_timeout(true);
                        }
                    }
                    s.frame.reset();
                    used += n;
                    s.window_out += out.len().saturating_sub(before);
                    s.window_in += n;
                    if s.client.quit {
                        used = input.len();
                        break;
                    }
                    if out.len() >= FLUSH_AT {
                        self.flush(s, out, conn);
                    }
                }
            }
        }
        self.flush(s, out, conn);
        if count > 0 {
            let c = &self.shared.commands[s.client.id as usize % COUNTERS];
            c.0.fetch_add(count, Ordering::Relaxed);
            s.client.update_listed(now);
        }
        used
    }

    /// [`Resp::serve`] with this thread's reply buffer.
    fn serve_with_buffer(&self, s: &mut Session, input: &[u8], conn: &mut Conn<'_>) -> usize {
        OUT.with(|cell| {
            let mut out = cell.take();
            out.clear();
            let used = self.serve(s, input, conn, &mut out);
            if out.capacity() <= 4 * FLUSH_AT {
                cell.replace(out);
            }
            used
        })
    }

    /// Hand `out` to where this connection's replies go.
    fn flush(&self, s: &mut Session, out: &mut Vec<u8>, conn: &mut Conn<'_>) {
        match &mut s.route {
            Route::Conn => {
                s.client.subs_changed = false;
                conn.write(out);
                if s.client.quit {
                    s.leave();
                    conn.close();
                }
            }
            Route::Entering(held) => held.extend_from_slice(out),
            Route::Handle | Route::Leaving => {
                let sent = if s.client.quit {
                    // Gone for PUBLISH and the counts before its OK is on its way (a worker
                    // thread's reply can reach the client before the worker goes on).
                    s.leave();
                    if out.is_empty() {
                        Ok(())
                    } else {
                        s.client.handle.send(out)
                    }
                } else if s.client.subs_changed {
                    let c = &mut s.client;
                    let subs = c.subs.get_or_insert_with(Box::default);
                    self.shared.pubsub.sync(c.id, &c.handle, subs, out)
                } else if out.is_empty() {
                    Ok(())
                } else {
                    s.client.handle.send(out)
                };
                s.client.subs_changed = false;
                self.after_send(s, sent.is_ok(), conn);
            }
        }
        out.clear();
    }

    /// After output went through the handle: close on failure or QUIT, and move between
    /// routes as subscriptions come and go.
    fn after_send(&self, s: &mut Session, sent: bool, conn: &mut Conn<'_>) {
        if !sent {
            // Over the output limit or gone: its replies cannot be delivered in order.
            conn.close();
            return;
        }
        if s.client.quit {
            // Gone for PUBLISH and the counts at once, not when the close completes.
            s.leave();
            let _ = s.client.handle.close();
            return;
        }
        match s.route {
            Route::Handle if !s.client.subscribed() => {
                s.route = Route::Leaving;
                if s.client.handle.notify().is_ok() {
                    s.notifies += 1;
                }
            }
            Route::Leaving if s.client.subscribed() => s.route = Route::Handle,
            _ => {}
        }
    }
}

impl Service for Resp {
    type Session = Session;

    fn input_limit(&self) -> usize {
        self.shared
            .config
            .proto_max_bulk_len
            .saturating_add(1 << 20)
            .max(super::DEFAULT_INPUT_LIMIT)
    }

    fn open(&self, info: &ConnInfo, conn: &mut Conn<'_>) -> Session {
        let shared = &self.shared;
        shared.clients.fetch_add(1, Ordering::Relaxed);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let listed = Listed::new(id, info.peer, info.local);
        shared
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&listed));
        Session {
            client: Client {
                id,
                listed,
                shown: Shown::NEW,
                handle: conn.handle(),
                subs: None,
                subs_changed: false,
                multi: None,
                quit: false,
                reply_off: false,
                reply_skip: 0,
                last: None,
            },
            frame: Frame::default(),
            route: Route::Conn,
            notifies: 0,
            window_out: 0,
            window_in: 0,
            drain_asked: false,
            after_eof: None,
            left: false,
            shared: Arc::clone(shared),
        }
    }

    fn data(&self, session: &mut Session, input: &[u8], conn: &mut Conn<'_>) -> usize {
        self.serve_with_buffer(session, input, conn)
    }

    fn eof(&self, session: &mut Session, rest: &[u8], conn: &mut Conn<'_>) {
        match session.route {
            // Commands held back for the output run as it drains, then the close.
            Route::Conn if session.drain_asked && !rest.is_empty() => {
                session.after_eof = Some((rest.to_vec(), 0));
            }
            Route::Conn => conn.close(),
            // Replies are on their way through the handle: close behind them.
            Route::Handle | Route::Leaving => {
                let _ = session.client.handle.close();
            }
            Route::Entering(_) => session.client.quit = true,
        }
    }

    fn input_full(&self, _session: &mut Session, _input: &[u8], conn: &mut Conn<'_>) {
        conn.write(b"-ERR Protocol error: request too big\r\n");
    }

    fn drained(&self, s: &mut Session, conn: &mut Conn<'_>) {
        s.drain_asked = false;
        s.window_out = 0;
        s.window_in = 0;
        if let Some((rest, done)) = s.after_eof.take() {
            let used = self.serve_with_buffer(s, &rest[done..], conn);
            if !matches!(s.route, Route::Conn) {
                // A SUBSCRIBE among them: its replies wait for the output to drain, then go
                // through the handle, which closes behind them.
                s.client.quit = true;
            } else if s.drain_asked && done + used < rest.len() && !conn.is_closing() {
                s.after_eof = Some((rest, done + used));
            } else {
                conn.close();
            }
            return;
        }
        if !matches!(s.route, Route::Entering(_)) {
            return;
        }
        let Route::Entering(held) = std::mem::replace(&mut s.route, Route::Handle) else {
            return;
        };
        let c = &mut s.client;
        let subs = c.subs.get_or_insert_with(Box::default);
        let sent = self.shared.pubsub.sync(c.id, &c.handle, subs, &held);
        c.subs_changed = false;
        self.after_send(s, sent.is_ok(), conn);
    }

    fn notified(&self, s: &mut Session, conn: &mut Conn<'_>) {
        s.notifies = s.notifies.saturating_sub(1);
        if s.notifies == 0 && matches!(s.route, Route::Leaving) {
            s.route = Route::Conn;
            conn.exempt_from_idle_timeout(false);
        }
    }

    fn close(&self, mut s: Session) {
        s.leave();
    }
}
