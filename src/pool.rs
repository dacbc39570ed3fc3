//! The worker pool, and inline mode.
//!
//! Both are [`Dispatch`] implementations a driver reports to.
//!
//! - [`Inline`] runs the service on the I/O thread at once (`--workers 0`): no channel hop.
//! - [`Pool`] starts worker threads; each driver gets a [`PoolLink`]. A connection belongs to
//!   worker `slot % workers` for its whole life, so its events are handled in order with no
//!   lock. Events travel in an [`Exchange`]: the driver fills it during a loop turn and
//!   sends it (one send per worker per turn); the worker runs the service, writes the answers
//!   into the same exchange and sends it back, waking the driver only if it sleeps. Buffers
//!   circulate, so a steady stream allocates nothing.
//! - Backpressure: a driver has at most [`CREDITS`] exchanges out per worker. When they are
//!   all out, events for that worker wait in the pending exchange; past
//!   [`PENDING_HIGH`] bytes the worker is congested and the driver stops reading from its
//!   connections. Memory stays bounded; nothing is dropped.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ringport_fallback::{Command, ConnId, Dispatch, Waker};

use crate::service::{Flow, Output, Service};

/// Exchanges a driver may have out per worker at once.
pub const CREDITS: usize = 4;
/// Pending bytes for one worker above which its connections stop being read.
pub const PENDING_HIGH: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Open,
    Data,
    Eof,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommandKind {
    Send,
    Close,
}

/// A record in a batch: which connection, what, and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Item<K> {
    conn: ConnId,
    kind: K,
    start: usize,
    end: usize,
}

/// Records plus one shared byte buffer.
#[derive(Debug)]
struct Batch<K> {
    items: Vec<Item<K>>,
    bytes: Vec<u8>,
}

impl<K> Default for Batch<K> {
    fn default() -> Self {
        Batch {
            items: Vec::new(),
            bytes: Vec::new(),
        }
    }
}

impl<K: Copy> Batch<K> {
    fn push(&mut self, conn: ConnId, kind: K, bytes: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.items.push(Item {
            conn,
            kind,
            start,
            end: self.bytes.len(),
        });
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Answers of the service for a batch of events.
type Commands = Batch<CommandKind>;

impl Commands {
    fn apply(&self, apply: &mut dyn FnMut(ConnId, Command<'_>)) {
        for it in &self.items {
            match it.kind {
                CommandKind::Send => apply(it.conn, Command::Send(&self.bytes[it.start..it.end])),
                CommandKind::Close => apply(it.conn, Command::Close),
            }
        }
    }
}

/// Sessions of one thread, indexed by a dense number derived from the slot.
struct Sessions<T> {
    slots: Vec<Option<(ConnId, T)>>,
}

impl<T> Sessions<T> {
    fn new() -> Self {
        Sessions { slots: Vec::new() }
    }

    /// Insert, returning a stale session left in that index (its `closed` was lost).
    fn insert(&mut self, index: usize, conn: ConnId, session: T) -> Option<T> {
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index].replace((conn, session)).map(|(_, s)| s)
    }

    fn get_mut(&mut self, index: usize, conn: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(index) {
            Some(Some((id, s))) if *id == conn => Some(s),
            _ => None,
        }
    }

    fn remove(&mut self, index: usize, conn: ConnId) -> Option<T> {
        match self.slots.get_mut(index) {
            Some(entry @ Some(_)) if entry.as_ref().map(|(id, _)| *id) == Some(conn) => {
                entry.take().map(|(_, s)| s)
            }
            _ => None,
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|e| e.take().map(|(_, s)| s))
    }
}

/// Run the service for one event, appending commands to `cmds`.
///
/// A panic in the service costs only its connection: the partial answer is dropped, the
/// session is discarded and the connection is closed; the thread goes on serving the others.
fn handle<S: Service>(
    service: &S,
    sessions: &mut Sessions<S::Session>,
    index: usize,
    conn: ConnId,
    kind: EventKind,
    bytes: &[u8],
    cmds: &mut Commands,
) {
    let start = cmds.bytes.len();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_service(service, sessions, index, conn, kind, bytes, &mut cmds.bytes)
    }));
    let flow = match run {
        Ok(Some(flow)) => flow,
        Ok(None) => return,
        Err(_) => {
            cmds.bytes.truncate(start);
            if let Some(s) = sessions.remove(index, conn) {
                // Its state may be half-updated: drop it without running the service again.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(s)));
            }
            if kind != EventKind::Closed {
                cmds.items.push(Item {
                    conn,
                    kind: CommandKind::Close,
                    start,
                    end: start,
                });
            }
            return;
        }
    };
    let end = cmds.bytes.len();
    if end > start {
        cmds.items.push(Item {
            conn,
            kind: CommandKind::Send,
            start,
            end,
        });
    }
    if flow == Flow::Close {
        cmds.items.push(Item {
            conn,
            kind: CommandKind::Close,
            start: end,
            end,
        });
    }
}

/// The service call for one event; `None` when there is nothing to answer.
fn run_service<S: Service>(
    service: &S,
    sessions: &mut Sessions<S::Session>,
    index: usize,
    conn: ConnId,
    kind: EventKind,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Option<Flow> {
    match kind {
        EventKind::Open => {
            // Insert the new session before telling the service about a stale one, so a
            // panic in `close` cannot leave the new connection without a session.
            if let Some(stale) = sessions.insert(index, conn, service.open()) {
                service.close(stale);
            }
            None
        }
        EventKind::Closed => {
            if let Some(s) = sessions.remove(index, conn) {
                service.close(s);
            }
            None
        }
        EventKind::Data => sessions
            .get_mut(index, conn)
            .map(|s| service.data(s, bytes, &mut Output::new(out))),
        EventKind::Eof => sessions
            .get_mut(index, conn)
            .map(|s| service.eof(s, &mut Output::new(out))),
    }
}

/// Inline mode: the service runs on the I/O thread as events arrive.
pub struct Inline<S: Service> {
    service: Arc<S>,
    sessions: Sessions<S::Session>,
    cmds: Commands,
}

impl<S: Service> Inline<S> {
    /// Inline dispatch for one driver.
    pub fn new(service: Arc<S>) -> Inline<S> {
        Inline {
            service,
            sessions: Sessions::new(),
            cmds: Commands::default(),
        }
    }

    fn run(&mut self, conn: ConnId, kind: EventKind, bytes: &[u8]) {
        handle(
            &*self.service,
            &mut self.sessions,
            conn.slot() as usize,
            conn,
            kind,
            bytes,
            &mut self.cmds,
        );
    }
}

impl<S: Service> Drop for Inline<S> {
    fn drop(&mut self) {
        for s in self.sessions.drain() {
            self.service.close(s);
        }
    }
}

impl<S: Service> Dispatch for Inline<S> {
    fn open(&mut self, conn: ConnId) {
        self.run(conn, EventKind::Open, &[]);
    }
    fn data(&mut self, conn: ConnId, bytes: &[u8]) {
        self.run(conn, EventKind::Data, bytes);
    }
    fn eof(&mut self, conn: ConnId) {
        self.run(conn, EventKind::Eof, &[]);
    }
    fn closed(&mut self, conn: ConnId) {
        self.run(conn, EventKind::Closed, &[]);
    }
    fn congested(&self, _conn: ConnId) -> bool {
        false
    }
    fn flush(&mut self) {}
    fn commands(&mut self, apply: &mut dyn FnMut(ConnId, Command<'_>)) {
        self.cmds.apply(apply);
        self.cmds.clear();
    }
    fn ready(&self) -> bool {
        !self.cmds.is_empty()
    }
    fn settled(&self) -> bool {
        self.cmds.is_empty()
    }
}

/// A batch of events going to a worker, and the commands coming back in it.
#[derive(Debug, Default)]
pub struct Exchange {
    driver: usize,
    worker: usize,
    events: Batch<EventKind>,
    cmds: Commands,
}

/// The worker threads of a server.
pub struct Pool {
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Start `workers` threads (at least one) running `service`, and return one
    /// [`PoolLink`] per driver, in the order of `wakers`.
    ///
    /// # Errors
    /// Fails when a thread cannot be spawned.
    pub fn start<S: Service>(
        service: Arc<S>,
        workers: usize,
        wakers: &[Arc<Waker>],
    ) -> std::io::Result<(Pool, Vec<PoolLink>)> {
        let workers = workers.max(1);
        let drivers = wakers.len();
        let mut back_tx = Vec::with_capacity(drivers);
        let mut back_rx = Vec::with_capacity(drivers);
        for _ in 0..drivers {
            // Bounded by construction: at most CREDITS exchanges per worker are out.
            let (tx, rx) = crossbeam_channel::bounded::<Box<Exchange>>(CREDITS * workers);
            back_tx.push(tx);
            back_rx.push(rx);
        }
        let mut to_workers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded::<Box<Exchange>>(CREDITS * drivers);
            to_workers.push(tx);
            let service = service.clone();
            let back = back_tx.clone();
            let wakers = wakers.to_vec();
            let h = std::thread::Builder::new()
                .name(format!("ringport-worker-{w}"))
                .spawn(move || worker_loop(&*service, workers, rx, back, wakers))?;
            handles.push(h);
        }
        let links = back_rx
            .into_iter()
            .enumerate()
            .map(|(driver, from_workers)| PoolLink {
                driver,
                to_workers: to_workers.clone(),
                from_workers,
                pending: (0..workers).map(|_| None).collect(),
                outstanding: vec![0; workers],
                free: Vec::new(),
            })
            .collect();
        Ok((Pool { workers: handles }, links))
    }

    /// Wait for every worker to exit (they do once every [`PoolLink`] is dropped).
    pub fn join(self) {
        for h in self.workers {
            let _ = h.join();
        }
    }
}

fn worker_loop<S: Service>(
    service: &S,
    workers: usize,
    rx: Receiver<Box<Exchange>>,
    back: Vec<Sender<Box<Exchange>>>,
    wakers: Vec<Arc<Waker>>,
) {
    // One session table per driver, indexed by slot / workers.
    let mut sessions: Vec<Sessions<S::Session>> =
        (0..back.len()).map(|_| Sessions::new()).collect();
    while let Ok(mut ex) = rx.recv() {
        let table = &mut sessions[ex.driver];
        let Exchange { events, cmds, .. } = &mut *ex;
        for it in &events.items {
            let index = it.conn.slot() as usize / workers;
            handle(
                service,
                table,
                index,
                it.conn,
                it.kind,
                &events.bytes[it.start..it.end],
                cmds,
            );
        }
        events.clear();
        let driver = ex.driver;
        if back[driver].send(ex).is_err() {
            // The driver is gone: nothing left to answer.
            continue;
        }
        wakers[driver].wake();
    }
    for table in &mut sessions {
        for s in table.drain() {
            service.close(s);
        }
    }
}

/// One driver's connection to the pool.
pub struct PoolLink {
    driver: usize,
    to_workers: Vec<Sender<Box<Exchange>>>,
    from_workers: Receiver<Box<Exchange>>,
    pending: Vec<Option<Box<Exchange>>>,
    outstanding: Vec<usize>,
    /// Boxed: exchanges travel through channels and come back; moving a pointer is cheap.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Exchange>>,
}

impl PoolLink {
    fn worker_of(&self, conn: ConnId) -> usize {
        conn.slot() as usize % self.to_workers.len()
    }

    fn push(&mut self, conn: ConnId, kind: EventKind, bytes: &[u8]) {
        let w = self.worker_of(conn);
        if self.pending[w].is_none() {
            let mut ex = self.free.pop().unwrap_or_default();
            ex.driver = self.driver;
            ex.worker = w;
            self.pending[w] = Some(ex);
        }
        if let Some(ex) = self.pending[w].as_mut() {
            ex.events.push(conn, kind, bytes);
        }
    }
}

impl Dispatch for PoolLink {
    fn open(&mut self, conn: ConnId) {
        self.push(conn, EventKind::Open, &[]);
    }
    fn data(&mut self, conn: ConnId, bytes: &[u8]) {
        self.push(conn, EventKind::Data, bytes);
    }
    fn eof(&mut self, conn: ConnId) {
        self.push(conn, EventKind::Eof, &[]);
    }
    fn closed(&mut self, conn: ConnId) {
        self.push(conn, EventKind::Closed, &[]);
    }
    fn congested(&self, conn: ConnId) -> bool {
        let w = self.worker_of(conn);
        self.pending[w]
            .as_ref()
            .is_some_and(|ex| ex.events.bytes.len() >= PENDING_HIGH)
    }
    fn flush(&mut self) {
        for w in 0..self.pending.len() {
            if self.outstanding[w] >= CREDITS {
                continue;
            }
            let Some(ex) = self.pending[w].take() else {
                continue;
            };
            match self.to_workers[w].try_send(ex) {
                Ok(()) => self.outstanding[w] += 1,
                Err(TrySendError::Full(ex)) => self.pending[w] = Some(ex),
                Err(TrySendError::Disconnected(_)) => {
                    // The worker died (its service panicked): nothing can be answered.
                }
            }
        }
    }
    fn commands(&mut self, apply: &mut dyn FnMut(ConnId, Command<'_>)) {
        let mut returned = false;
        while let Ok(mut ex) = self.from_workers.try_recv() {
            returned = true;
            self.outstanding[ex.worker] -= 1;
            ex.cmds.apply(apply);
            ex.cmds.clear();
            // A burst may have grown the buffers; do not keep that memory around.
            if ex.cmds.bytes.capacity() > 2 * PENDING_HIGH {
                ex.cmds.bytes = Vec::new();
            }
            if ex.events.bytes.capacity() > 2 * PENDING_HIGH {
                ex.events.bytes = Vec::new();
            }
            self.free.push(ex);
        }
        if returned {
            self.flush();
        }
    }
    fn ready(&self) -> bool {
        !self.from_workers.is_empty()
    }
    fn settled(&self) -> bool {
        self.outstanding.iter().all(|&n| n == 0)
            && self
                .pending
                .iter()
                .all(|p| p.as_ref().is_none_or(|ex| ex.events.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Echo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn collect(d: &mut dyn Dispatch) -> Vec<(ConnId, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        d.commands(&mut |c, cmd| match cmd {
            Command::Send(b) => out.push((c, Some(b.to_vec()))),
            Command::Close => out.push((c, None)),
        });
        out
    }

    #[test]
    fn inline_echoes_in_order_and_closes_after_eof() {
        let mut d = Inline::new(Arc::new(Echo));
        let a = ConnId::new(0, 3, 1);
        d.open(a);
        d.data(a, b"one");
        d.data(a, b"two");
        d.eof(a);
        assert!(d.ready());
        let got = collect(&mut d);
        assert_eq!(
            got,
            vec![
                (a, Some(b"one".to_vec())),
                (a, Some(b"two".to_vec())),
                (a, None)
            ]
        );
        assert!(!d.ready());
    }

    #[test]
    fn recycled_slot_never_gets_old_bytes() {
        let mut d = Inline::new(Arc::new(Echo));
        let old = ConnId::new(0, 5, 1);
        let new = ConnId::new(0, 5, 2);
        d.open(old);
        d.closed(old);
        d.open(new);
        // A late event for the old generation is ignored.
        d.data(old, b"stale");
        d.data(new, b"fresh");
        assert_eq!(collect(&mut d), vec![(new, Some(b"fresh".to_vec()))]);
    }

    struct Counting(AtomicUsize);
    impl Service for Counting {
        type Session = ();
        fn open(&self) {}
        fn data(&self, _: &mut (), input: &[u8], out: &mut Output<'_>) -> Flow {
            out.extend_from_slice(input);
            Flow::Continue
        }
        fn close(&self, _: ()) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pool_round_trip_keeps_order_per_connection() {
        let notified = Arc::new(AtomicUsize::new(0));
        let n = notified.clone();
        let waker = Waker::with_notify(Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        }));
        let service = Arc::new(Counting(AtomicUsize::new(0)));
        let (pool, mut links) =
            Pool::start(service.clone(), 3, std::slice::from_ref(&waker)).unwrap();
        let mut link = links.pop().unwrap();
        let conns: Vec<ConnId> = (0..10).map(|s| ConnId::new(0, s, 7)).collect();
        for &c in &conns {
            link.open(c);
        }
        let mut expected = std::collections::HashMap::new();
        for round in 0..50u32 {
            for &c in &conns {
                let msg = format!("{}:{round};", c.slot());
                link.data(c, msg.as_bytes());
                expected
                    .entry(c)
                    .or_insert_with(Vec::new)
                    .extend_from_slice(msg.as_bytes());
            }
            link.flush();
        }
        let mut got: std::collections::HashMap<ConnId, Vec<u8>> = Default::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !link.settled() {
            assert!(std::time::Instant::now() < deadline, "pool did not settle");
            link.commands(&mut |c, cmd| {
                if let Command::Send(b) = cmd {
                    got.entry(c).or_default().extend_from_slice(b);
                }
            });
            std::thread::yield_now();
        }
        assert_eq!(got, expected);
        for &c in &conns {
            link.closed(c);
        }
        link.flush();
        drop(link);
        pool.join();
        assert_eq!(
            service.0.load(Ordering::SeqCst),
            10,
            "every session closed once"
        );
    }

    /// Panics on the input `boom`, echoes anything else.
    struct Fragile;
    impl Service for Fragile {
        type Session = ();
        fn open(&self) {}
        fn data(&self, _: &mut (), input: &[u8], out: &mut Output<'_>) -> Flow {
            out.extend_from_slice(b"partial ");
            assert!(input != b"boom", "service bug");
            out.extend_from_slice(input);
            Flow::Continue
        }
    }

    #[test]
    fn service_panic_closes_only_its_connection() {
        let mut d = Inline::new(Arc::new(Fragile));
        let a = ConnId::new(0, 1, 0);
        let b = ConnId::new(0, 2, 0);
        d.open(a);
        d.open(b);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        d.data(a, b"boom");
        std::panic::set_hook(hook);
        d.data(b, b"fine");
        // The panicking call's partial output is gone; `a` is closed; `b` is served.
        assert_eq!(
            collect(&mut d),
            vec![(a, None), (b, Some(b"partial fine".to_vec()))]
        );
        // Later bytes for `a` find no session and get no answer.
        d.data(a, b"late");
        assert_eq!(collect(&mut d), vec![]);
    }

    #[test]
    fn full_worker_is_congested_and_nothing_is_lost() {
        let waker = Waker::new();
        let (pool, mut links) = Pool::start(Arc::new(Echo), 1, &[waker]).unwrap();
        let mut link = links.pop().unwrap();
        let c = ConnId::new(0, 0, 0);
        link.open(c);
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        // Without anyone collecting commands, credits run out and the pending batch grows
        // until the link reports congestion.
        while !link.congested(c) {
            link.data(c, &chunk);
            sent += chunk.len();
            link.flush();
            assert!(sent < 64 * 1024 * 1024, "never congested");
        }
        let mut echoed = 0usize;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !link.settled() {
            assert!(std::time::Instant::now() < deadline);
            link.commands(&mut |_, cmd| {
                if let Command::Send(b) = cmd {
                    echoed += b.len();
                }
            });
            link.flush();
            std::thread::yield_now();
        }
        assert_eq!(echoed, sent);
        assert!(!link.congested(c));
        drop(link);
        pool.join();
    }
}
