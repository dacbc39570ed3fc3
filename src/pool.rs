//! The worker pool, and inline mode: where services run.
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
//!
//! What both share ([`handle`]): the session table, with each connection's unconsumed input
//! (framing), its deadline and whether the service closed it; panics caught per call. The
//! deadlines themselves are kept on the driver's side ([`Timers`]), so they ride the
//! driver's wait: no timer thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ringport_fallback::event::{ConnInfo, FileRange};
use ringport_fallback::{Command, ConnId, Dispatch, Stats, Waker};

use crate::service::handle::{MailKind, MailQueue};
use crate::service::{Conn, Mailbox, Service};

/// Exchanges a driver may have out per worker at once.
pub(crate) const CREDITS: usize = 4;
/// Pending bytes for one worker above which its connections stop being read.
pub(crate) const PENDING_HIGH: usize = 256 * 1024;
/// Deadlines fire at most this late; it bounds how often the deadline table is scanned.
const TIMER_GRANULARITY: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// Index into the batch's connection infos.
    Open(usize),
    Data,
    Eof,
    Closed,
    Drained,
    Notify,
    /// The deadline of this generation fell due.
    Deadline(u32),
}

/// What a service asked for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    Send,
    /// Index into [`Commands::files`].
    SendFile(usize),
    NotifyDrained,
    PauseUntilDrained,
    ResumeReading,
    IdleExempt(bool),
    /// Index into [`Commands::deadlines`].
    Deadline(usize),
    Close,
}

/// A connection's deadline as its service thread knows it: every set or clear is a new
/// generation, so a deadline that falls due after the service moved or cleared it (the
/// driver's copy was behind) is recognised and ignored.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeadlineState {
    pub(crate) generation: u32,
    pub(crate) armed: bool,
    /// When, in milliseconds after [`epoch`] (kept small: one per connection).
    pub(crate) at_ms: u32,
}

/// The instant deadlines are counted from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A record in a batch: which connection, what, and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Item<K> {
    conn: ConnId,
    kind: K,
    start: usize,
    end: usize,
}

/// Events for a worker: records plus one shared byte buffer.
#[derive(Debug, Default)]
struct Events {
    items: Vec<Item<EventKind>>,
    bytes: Vec<u8>,
    infos: Vec<ConnInfo>,
}

impl Events {
    fn push(&mut self, conn: ConnId, kind: EventKind, bytes: &[u8]) {
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
        self.infos.clear();
    }
}

/// Answers of a service: records, one byte buffer, and the file ranges and deadlines the
/// records point to.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    items: Vec<Item<CommandKind>>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) files: Vec<FileRange>,
    deadlines: Vec<(Option<Instant>, u32)>,
    /// The clock, read once per batch of events ([`Commands::now`]); forgotten with the
    /// commands when they were applied.
    now: std::cell::Cell<Option<Instant>>,
}

impl Commands {
    /// The time this batch of events is handled at: read at the first call after the
    /// commands were last cleared (once per turn inline, once per batch in a worker).
    pub(crate) fn now(&self) -> Instant {
        match self.now.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.now.set(Some(t));
                t
            }
        }
    }

    pub(crate) fn push_item(&mut self, conn: ConnId, kind: CommandKind) {
        let at = self.bytes.len();
        self.push_range(conn, kind, at, at);
    }

    pub(crate) fn push_range(&mut self, conn: ConnId, kind: CommandKind, start: usize, end: usize) {
        self.items.push(Item {
            conn,
            kind,
            start,
            end,
        });
    }

    pub(crate) fn push_deadline(&mut self, conn: ConnId, at: Option<Instant>, generation: u32) {
        let index = self.deadlines.len();
        self.deadlines.push((at, generation));
        self.push_item(conn, CommandKind::Deadline(index));
    }

    fn mark(&self) -> (usize, usize, usize, usize) {
        (
            self.items.len(),
            self.bytes.len(),
            self.files.len(),
            self.deadlines.len(),
        )
    }

    fn truncate(&mut self, mark: (usize, usize, usize, usize)) {
        self.items.truncate(mark.0);
        self.bytes.truncate(mark.1);
        self.files.truncate(mark.2);
        self.deadlines.truncate(mark.3);
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
        self.files.clear();
        self.deadlines.clear();
        self.now.set(None);
    }

    /// Hand every command to the driver, in order; deadlines go to `timers` instead.
    fn apply(&self, timers: &mut Timers, apply: &mut dyn FnMut(ConnId, Command<'_>)) {
        for it in &self.items {
            match it.kind {
                CommandKind::Send => apply(it.conn, Command::Send(&self.bytes[it.start..it.end])),
                CommandKind::SendFile(i) => apply(it.conn, Command::SendFile(&self.files[i])),
                CommandKind::NotifyDrained => apply(it.conn, Command::NotifyDrained),
                CommandKind::PauseUntilDrained => apply(it.conn, Command::PauseUntilDrained),
                CommandKind::ResumeReading => apply(it.conn, Command::ResumeReading),
                CommandKind::IdleExempt(on) => apply(it.conn, Command::IdleExempt(on)),
                CommandKind::Close => apply(it.conn, Command::Close),
                CommandKind::Deadline(i) => {
                    let (at, generation) = self.deadlines[i];
                    timers.set(it.conn, at.map(|t| (t, generation)));
                }
            }
        }
    }
}

/// Per-connection deadlines of one driver, kept on the driver's thread.
///
/// A scan finds what fell due; it runs only when the earliest known deadline passed, and no
/// more often than [`TIMER_GRANULARITY`].
#[derive(Debug, Default)]
struct Timers {
    at: Vec<Option<(ConnId, Instant, u32)>>,
    armed: usize,
    earliest: Option<Instant>,
    /// Fallen due: connection and deadline generation.
    due: Vec<(ConnId, u32)>,
}

impl Timers {
    fn set(&mut self, conn: ConnId, at: Option<(Instant, u32)>) {
        let slot = conn.slot() as usize;
        if slot >= self.at.len() {
            if at.is_none() {
                return;
            }
            self.at.resize(slot + 1, None);
        }
        let before = std::mem::replace(&mut self.at[slot], at.map(|(t, g)| (conn, t, g)));
        match (before.is_some(), at.is_some()) {
            (false, true) => self.armed += 1,
            (true, false) => self.armed -= 1,
            _ => {}
        }
        if self.armed == 0 {
            // Nothing left to wait for: no wake-ups, no table.
            self.earliest = None;
            self.at = Vec::new();
            return;
        }
        if let Some((t, _)) = at {
            if self.earliest.is_none_or(|e| t < e) {
                self.earliest = Some(t);
            }
        }
    }

    fn clear(&mut self, conn: ConnId) {
        if let Some(Some((id, _, _))) = self.at.get(conn.slot() as usize) {
            if *id == conn {
                self.set(conn, None);
            }
        }
    }

    fn next(&self) -> Option<Instant> {
        self.earliest
    }

    /// Connections whose deadline passed by `now` (each cleared), in `self.due`.
    fn expire(&mut self, now: Instant) -> &[(ConnId, u32)] {
        self.due.clear();
        if self.earliest.is_none_or(|e| now < e) {
            return &self.due;
        }
        let mut next: Option<Instant> = None;
        for entry in self.at.iter_mut() {
            if let Some((conn, t, generation)) = *entry {
                if t <= now {
                    self.due.push((conn, generation));
                    *entry = None;
                    self.armed -= 1;
                } else if next.is_none_or(|n| t < n) {
                    next = Some(t);
                }
            }
        }
        self.earliest = next.map(|n| n.max(now + TIMER_GRANULARITY));
        if self.armed == 0 {
            self.earliest = None;
            self.at = Vec::new();
        }
        &self.due
    }
}

/// Input a service has not consumed yet: boxed, so a connection without a partial frame
/// pays one pointer for it, not a whole `Vec`.
#[allow(clippy::box_collection)]
type Input = Option<Box<Vec<u8>>>;

/// What a worker needs of each driver: its waker, its handles' mailbox, its stats.
type DriverLinks = (Arc<Waker>, Arc<Mailbox>, Arc<Stats>);

/// One connection's state on the thread that runs its service.
struct Entry<T> {
    id: ConnId,
    session: T,
    /// Input the service has not consumed yet (none while the connection holds no partial
    /// frame: an idle connection costs no buffer).
    input: Input,
    deadline: DeadlineState,
    /// The service asked to close: later input and events are ignored.
    closing: bool,
    /// The service paused reading ([`Conn::pause_reading_until_drained`]) and has not gone
    /// through its input since: input the driver handed over before it had the pause is
    /// held, past the input limit if need be (no more than was in flight to this thread).
    holding: bool,
}

/// Sessions of one thread, indexed by a dense number derived from the slot.
struct Sessions<T> {
    slots: Vec<Option<Entry<T>>>,
}

impl<T> Sessions<T> {
    fn new() -> Self {
        Sessions { slots: Vec::new() }
    }

    /// Insert, returning a stale session left in that index (its `closed` was lost).
    fn insert(&mut self, index: usize, entry: Entry<T>) -> Option<T> {
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index].replace(entry).map(|e| e.session)
    }

    fn get_mut(&mut self, index: usize, conn: ConnId) -> Option<&mut Entry<T>> {
        match self.slots.get_mut(index) {
            Some(Some(e)) if e.id == conn => Some(e),
            _ => None,
        }
    }

    fn remove(&mut self, index: usize, conn: ConnId) -> Option<T> {
        match self.slots.get_mut(index) {
            Some(slot @ Some(_)) if slot.as_ref().map(|e| e.id) == Some(conn) => {
                slot.take().map(|e| e.session)
            }
            _ => None,
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|e| e.take().map(|e| e.session))
    }
}

/// An event as the service layer sees it.
#[derive(Clone, Copy)]
enum Ev<'a> {
    Open(&'a ConnInfo),
    Data(&'a [u8]),
    Eof,
    Closed,
    Drained,
    Notify,
    /// The deadline of this generation fell due.
    Deadline(u32),
}

impl<'a> Ev<'a> {
    fn from_item(kind: EventKind, bytes: &'a [u8], infos: &'a [ConnInfo]) -> Ev<'a> {
        match kind {
            EventKind::Open(i) => Ev::Open(&infos[i]),
            EventKind::Data => Ev::Data(bytes),
            EventKind::Eof => Ev::Eof,
            EventKind::Closed => Ev::Closed,
            EventKind::Drained => Ev::Drained,
            EventKind::Notify => Ev::Notify,
            EventKind::Deadline(generation) => Ev::Deadline(generation),
        }
    }
}

/// What a thread running services needs besides the session table.
struct Runner<'a, S: Service> {
    service: &'a S,
    mailbox: &'a Arc<Mailbox>,
    panics: &'a AtomicU64,
}

/// Run the service for one event, appending commands to `cmds`.
///
/// A panic in the service costs only its connection: the output of that call is dropped,
/// the session is discarded and the connection is closed; the thread goes on serving the
/// others.
fn handle<S: Service>(
    r: &Runner<'_, S>,
    sessions: &mut Sessions<S::Session>,
    index: usize,
    conn: ConnId,
    ev: Ev<'_>,
    cmds: &mut Commands,
) {
    let mark = cmds.mark();
    let run = catch_unwind(AssertUnwindSafe(|| {
        run_service(r, sessions, index, conn, ev, cmds)
    }));
    if run.is_err() {
        cmds.truncate(mark);
        r.panics.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = sessions.remove(index, conn) {
            // Its state may be half-updated: drop it without running the service again.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(s)));
        }
        if !matches!(ev, Ev::Closed) {
            cmds.push_item(conn, CommandKind::Close);
        }
    }
}

/// The service call for one event.
fn run_service<S: Service>(
    r: &Runner<'_, S>,
    sessions: &mut Sessions<S::Session>,
    index: usize,
    conn: ConnId,
    ev: Ev<'_>,
    cmds: &mut Commands,
) {
    let service = r.service;
    if let Ev::Open(info) = ev {
        let mut deadline = DeadlineState::default();
        let mut closing = false;
        let (session, holding) = {
            let mut c = Conn::new(conn, cmds, &mut deadline, r.mailbox, &mut closing);
            let session = service.open(info, &mut c);
            (session, c.paused_reading())
        };
        let entry = Entry {
            id: conn,
            session,
            input: None,
            deadline,
            closing,
            holding,
        };
        // Insert the new session before telling the service about a stale one, so a panic
        // in `close` cannot leave the new connection without a session.
        if let Some(stale) = sessions.insert(index, entry) {
            service.close(stale);
        }
        return;
    }
    if let Ev::Closed = ev {
        if let Some(s) = sessions.remove(index, conn) {
            service.close(s);
        }
        return;
    }
    let Some(e) = sessions.get_mut(index, conn) else {
        return;
    };
    if e.closing {
        return;
    }
    let Entry {
        session,
        input,
        deadline,
        closing,
        holding,
        ..
    } = e;
    if let Ev::Deadline(generation) = ev {
        // A deadline the service moved or cleared after the driver's copy fell due.
        if !deadline.armed || deadline.generation != generation {
            return;
        }
        deadline.armed = false;
    }
    let mut c = Conn::new(conn, cmds, deadline, r.mailbox, closing);
    match ev {
        Ev::Data(bytes) => feed(service, session, input, bytes, *holding, &mut c),
        Ev::Eof => {
            let rest = input.take().map(|b| *b).unwrap_or_default();
            service.eof(session, &rest, &mut c);
        }
        Ev::Drained => {
            service.drained(session, &mut c);
            refeed(service, session, input, &mut c);
            // Reading paused by the service stays paused until it has seen the input it
            // holds: only now, unless it paused again, is more read from the peer (so what
            // it does not consume yet waits in the socket, not here).
            if !c.paused_reading() {
                c.resume_reading();
                *holding = false;
            }
        }
        Ev::Notify => {
            service.notified(session, &mut c);
            refeed(service, session, input, &mut c);
        }
        Ev::Deadline(_) => service.deadline(session, &mut c),
        Ev::Open(_) | Ev::Closed => {}
    }
    *holding |= c.paused_reading();
}

/// Show the service its input (what it left before, then `bytes`); keep what it does not
/// consume, up to its input limit (past it while the service holds reading paused:
/// `holding`, or a pause in this call).
fn feed<S: Service>(
    service: &S,
    session: &mut S::Session,
    input: &mut Input,
    bytes: &[u8],
    holding: bool,
    c: &mut Conn<'_>,
) {
    let limit = service.input_limit();
    let Some(held) = input.as_mut() else {
        // No partial frame: the service reads the driver's bytes where they are.
        let used = consume(service, session, bytes, c);
        let rest = &bytes[used..];
        if rest.is_empty() || c.is_closing() {
            return;
        }
        if rest.len() > limit && !holding && !c.paused_reading() {
            service.input_full(session, rest, c);
            c.close();
        } else {
            *input = Some(Box::new(rest.to_vec()));
        }
        return;
    };
    held.extend_from_slice(bytes);
    let used = consume(service, session, held, c);
    held.drain(..used);
    if held.is_empty() || c.is_closing() {
        *input = None;
        return;
    }
    if held.len() > limit && !holding && !c.paused_reading() {
        let held = input.take().expect("input is held");
        service.input_full(session, &held, c);
        c.close();
    }
}

/// Show the held input again, after `drained` or `notified`: a service that stopped
/// consuming until its output drained (or until something else happened) goes on from
/// where it stopped without waiting for more bytes from the peer.
fn refeed<S: Service>(service: &S, session: &mut S::Session, input: &mut Input, c: &mut Conn<'_>) {
    let Some(held) = input.as_mut() else {
        return;
    };
    if c.is_closing() {
        return;
    }
    let used = consume(service, session, held, c);
    held.drain(..used);
    if held.is_empty() || c.is_closing() {
        *input = None;
    }
}

/// Call `data` while it consumes something and input is left. Returns bytes consumed.
fn consume<S: Service>(
    service: &S,
    session: &mut S::Session,
    input: &[u8],
    c: &mut Conn<'_>,
) -> usize {
    let mut used = 0;
    while used < input.len() && !c.is_closing() {
        let n = service
            .data(session, &input[used..], c)
            .min(input.len() - used);
        if n == 0 {
            break;
        }
        used += n;
    }
    used
}

/// Apply the requests handles queued for this driver. Sends and closes go to the driver at
/// once; notifications go to `notify` (which runs or forwards the service call).
fn apply_mail(
    mail: &MailQueue,
    apply: &mut dyn FnMut(ConnId, Command<'_>),
    notify: &mut dyn FnMut(ConnId),
) {
    for &(conn, kind, start, end) in &mail.items {
        match kind {
            MailKind::Send => apply(conn, Command::Send(&mail.bytes[start..end])),
            MailKind::Close => apply(conn, Command::Close),
            MailKind::Notify => notify(conn),
        }
    }
}

/// Inline mode: the service runs on the I/O thread as events arrive.
pub(crate) struct Inline<S: Service> {
    service: Arc<S>,
    sessions: Sessions<S::Session>,
    cmds: Commands,
    mailbox: Arc<Mailbox>,
    mail: MailQueue,
    timers: Timers,
    stats: Arc<Stats>,
}

impl<S: Service> Inline<S> {
    /// Inline dispatch for one driver.
    pub(crate) fn new(service: Arc<S>, mailbox: Arc<Mailbox>, stats: Arc<Stats>) -> Inline<S> {
        Inline {
            service,
            sessions: Sessions::new(),
            cmds: Commands::default(),
            mailbox,
            mail: MailQueue::default(),
            timers: Timers::default(),
            stats,
        }
    }

    fn run(&mut self, conn: ConnId, ev: Ev<'_>) {
        let r = Runner {
            service: &*self.service,
            mailbox: &self.mailbox,
            panics: &self.stats.service_panics,
        };
        handle(
            &r,
            &mut self.sessions,
            conn.slot() as usize,
            conn,
            ev,
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
    fn open(&mut self, conn: ConnId, info: &ConnInfo) {
        self.mailbox.opened(conn);
        self.run(conn, Ev::Open(info));
    }
    fn data(&mut self, conn: ConnId, bytes: &[u8]) {
        self.run(conn, Ev::Data(bytes));
    }
    fn eof(&mut self, conn: ConnId) {
        self.run(conn, Ev::Eof);
    }
    fn closed(&mut self, conn: ConnId) {
        self.mailbox.closed(conn);
        self.timers.clear(conn);
        self.run(conn, Ev::Closed);
    }
    fn drained(&mut self, conn: ConnId) {
        self.run(conn, Ev::Drained);
    }
    fn backlog(&mut self, conn: ConnId, over: bool) {
        self.mailbox.backlog(conn, over);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }
    fn expire(&mut self, now: Instant) {
        let due = self.timers.expire(now).to_vec();
        for (conn, generation) in due {
            self.run(conn, Ev::Deadline(generation));
        }
    }
    fn congested(&self, _conn: ConnId) -> bool {
        false
    }
    fn flush(&mut self) {}
    fn commands(&mut self, apply: &mut dyn FnMut(ConnId, Command<'_>)) {
        self.cmds.apply(&mut self.timers, apply);
        self.cmds.clear();
        if self.mailbox.waiting() {
            let mut mail = std::mem::take(&mut self.mail);
            self.mailbox.take(&mut mail);
            apply_mail(&mail, apply, &mut |conn| self.run(conn, Ev::Notify));
            mail.clear();
            self.mail = mail;
            self.cmds.apply(&mut self.timers, apply);
            self.cmds.clear();
        }
    }
    fn ready(&self) -> bool {
        !self.cmds.is_empty() || self.mailbox.waiting()
    }
    fn settled(&self) -> bool {
        self.cmds.is_empty()
    }
}

/// A batch of events going to a worker, and the commands coming back in it.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    driver: usize,
    worker: usize,
    events: Events,
    cmds: Commands,
}

/// The worker threads of a server.
pub(crate) struct Pool {
    workers: Vec<JoinHandle<()>>,
}

/// What each driver shares with the workers.
pub(crate) struct DriverLink {
    pub(crate) waker: Arc<Waker>,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) stats: Arc<Stats>,
}

impl Pool {
    /// Start `workers` threads (at least one) running `service`, and return one
    /// [`PoolLink`] per driver, in the order of `drivers`.
    ///
    /// # Errors
    /// Fails when a thread cannot be spawned.
    pub(crate) fn start<S: Service>(
        service: Arc<S>,
        workers: usize,
        drivers: &[DriverLink],
    ) -> std::io::Result<(Pool, Vec<PoolLink>)> {
        let workers = workers.max(1);
        let mut back_tx = Vec::with_capacity(drivers.len());
        let mut back_rx = Vec::with_capacity(drivers.len());
        for _ in drivers {
            // Bounded by construction: at most CREDITS exchanges per worker are out.
            let (tx, rx) = crossbeam_channel::bounded::<Box<Exchange>>(CREDITS * workers);
            back_tx.push(tx);
            back_rx.push(rx);
        }
        let mut to_workers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        let shared: Arc<Vec<DriverLinks>> = Arc::new(
            drivers
                .iter()
                .map(|d| (d.waker.clone(), d.mailbox.clone(), d.stats.clone()))
                .collect(),
        );
        for w in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded::<Box<Exchange>>(CREDITS * drivers.len());
            to_workers.push(tx);
            let service = service.clone();
            let back = back_tx.clone();
            let shared = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("ringport-worker-{w}"))
                .spawn(move || worker_loop(&*service, workers, rx, back, &shared))?;
            handles.push(h);
        }
        let links = back_rx
            .into_iter()
            .zip(drivers)
            .enumerate()
            .map(|(driver, (from_workers, d))| PoolLink {
                driver,
                to_workers: to_workers.clone(),
                from_workers,
                pending: (0..workers).map(|_| None).collect(),
                outstanding: vec![0; workers],
                free: Vec::new(),
                mailbox: d.mailbox.clone(),
                mail: MailQueue::default(),
                timers: Timers::default(),
            })
            .collect();
        Ok((Pool { workers: handles }, links))
    }

    /// Wait for every worker to exit (they do once every [`PoolLink`] is dropped).
    pub(crate) fn join(self) {
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
    drivers: &[DriverLinks],
) {
    // One session table per driver, indexed by slot / workers.
    let mut sessions: Vec<Sessions<S::Session>> =
        (0..back.len()).map(|_| Sessions::new()).collect();
    while let Ok(mut ex) = rx.recv() {
        let driver = ex.driver;
        let (waker, mailbox, stats) = &drivers[driver];
        let r = Runner {
            service,
            mailbox,
            panics: &stats.service_panics,
        };
        let table = &mut sessions[driver];
        let Exchange { events, cmds, .. } = &mut *ex;
        for it in &events.items {
            let index = it.conn.slot() as usize / workers;
            let ev = Ev::from_item(it.kind, &events.bytes[it.start..it.end], &events.infos);
            handle(&r, table, index, it.conn, ev, cmds);
        }
        events.clear();
        if back[driver].send(ex).is_err() {
            // The driver is gone: nothing left to answer.
            continue;
        }
        waker.wake();
    }
    for table in &mut sessions {
        for s in table.drain() {
            service.close(s);
        }
    }
}

/// One driver's connection to the pool.
pub(crate) struct PoolLink {
    driver: usize,
    to_workers: Vec<Sender<Box<Exchange>>>,
    from_workers: Receiver<Box<Exchange>>,
    pending: Vec<Option<Box<Exchange>>>,
    outstanding: Vec<usize>,
    /// Boxed: exchanges travel through channels and come back; moving a pointer is cheap.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Exchange>>,
    mailbox: Arc<Mailbox>,
    mail: MailQueue,
    timers: Timers,
}

impl PoolLink {
    fn worker_of(&self, conn: ConnId) -> usize {
        conn.slot() as usize % self.to_workers.len()
    }

    fn exchange(&mut self, conn: ConnId) -> &mut Exchange {
        let w = self.worker_of(conn);
        let driver = self.driver;
        let free = &mut self.free;
        self.pending[w].get_or_insert_with(|| {
            let mut ex = free.pop().unwrap_or_default();
            ex.driver = driver;
            ex.worker = w;
            ex
        })
    }

    fn push(&mut self, conn: ConnId, kind: EventKind, bytes: &[u8]) {
        self.exchange(conn).events.push(conn, kind, bytes);
    }
}

impl Dispatch for PoolLink {
    fn open(&mut self, conn: ConnId, info: &ConnInfo) {
        self.mailbox.opened(conn);
        let events = &mut self.exchange(conn).events;
        let i = events.infos.len();
        events.infos.push(*info);
        events.push(conn, EventKind::Open(i), &[]);
    }
    fn data(&mut self, conn: ConnId, bytes: &[u8]) {
        self.push(conn, EventKind::Data, bytes);
    }
    fn eof(&mut self, conn: ConnId) {
        self.push(conn, EventKind::Eof, &[]);
    }
    fn closed(&mut self, conn: ConnId) {
        self.mailbox.closed(conn);
        self.timers.clear(conn);
        self.push(conn, EventKind::Closed, &[]);
    }
    fn drained(&mut self, conn: ConnId) {
        self.push(conn, EventKind::Drained, &[]);
    }
    fn backlog(&mut self, conn: ConnId, over: bool) {
        self.mailbox.backlog(conn, over);
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }
    fn expire(&mut self, now: Instant) {
        let due = self.timers.expire(now).to_vec();
        for (conn, generation) in due {
            self.push(conn, EventKind::Deadline(generation), &[]);
        }
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
                    // The worker is gone: nothing can be answered.
                }
            }
        }
    }
    fn commands(&mut self, apply: &mut dyn FnMut(ConnId, Command<'_>)) {
        let mut returned = false;
        while let Ok(mut ex) = self.from_workers.try_recv() {
            returned = true;
            self.outstanding[ex.worker] -= 1;
            ex.cmds.apply(&mut self.timers, apply);
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
        if self.mailbox.waiting() {
            let mut mail = std::mem::take(&mut self.mail);
            self.mailbox.take(&mut mail);
            let mut notified = false;
            apply_mail(&mail, apply, &mut |conn| {
                self.push(conn, EventKind::Notify, &[]);
                notified = true;
            });
            mail.clear();
            self.mail = mail;
            returned |= notified;
        }
        if returned {
            self.flush();
        }
    }
    fn ready(&self) -> bool {
        !self.from_workers.is_empty() || self.mailbox.waiting()
    }
    fn settled(&self) -> bool {
        self.outstanding.iter().all(|&n| n == 0)
            && self
                .pending
                .iter()
                .all(|p| p.as_ref().is_none_or(|ex| ex.events.items.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Echo;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn the_clock_is_read_once_per_batch() {
        let mut cmds = Commands::default();
        let first = cmds.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cmds.now(), first, "the same batch sees one time");
        cmds.clear();
        assert!(cmds.now() > first, "a new batch reads the clock again");
    }

    fn collect(d: &mut dyn Dispatch) -> Vec<(ConnId, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        d.commands(&mut |c, cmd| match cmd {
            Command::Send(b) => out.push((c, Some(b.to_vec()))),
            Command::Close => out.push((c, None)),
            other => panic!("unexpected command {other:?}"),
        });
        out
    }

    fn info() -> ConnInfo {
        ConnInfo::unknown()
    }

    fn inline<S: Service>(service: S) -> Inline<S> {
        Inline::new(
            Arc::new(service),
            Mailbox::new(Waker::new(), 1 << 20),
            Arc::new(Stats::default()),
        )
    }

    fn links(waker: &Arc<Waker>) -> Vec<DriverLink> {
        vec![DriverLink {
            waker: waker.clone(),
            mailbox: Mailbox::new(waker.clone(), 1 << 20),
            stats: Arc::new(Stats::default()),
        }]
    }

    #[test]
    fn inline_echoes_in_order_and_closes_after_eof() {
        let mut d = inline(Echo);
        let a = ConnId::new(0, 3, 1);
        d.open(a, &info());
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
        let mut d = inline(Echo);
        let old = ConnId::new(0, 5, 1);
        let new = ConnId::new(0, 5, 2);
        d.open(old, &info());
        d.closed(old);
        d.open(new, &info());
        // A late event for the old generation is ignored.
        d.data(old, b"stale");
        d.data(new, b"fresh");
        assert_eq!(collect(&mut d), vec![(new, Some(b"fresh".to_vec()))]);
    }

    struct Counting(AtomicUsize);
    impl Service for Counting {
        type Session = ();
        fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) {}
        fn data(&self, _: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
            conn.write(input);
            input.len()
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
        let (pool, mut links) = Pool::start(service.clone(), 3, &links(&waker)).unwrap();
        let mut link = links.pop().unwrap();
        let conns: Vec<ConnId> = (0..10).map(|s| ConnId::new(0, s, 7)).collect();
        for &c in &conns {
            link.open(c, &info());
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
        fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) {}
        fn data(&self, _: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
            conn.write(b"partial ");
            assert!(input != b"boom", "service bug");
            conn.write(input);
            input.len()
        }
    }

    #[test]
    fn service_panic_closes_only_its_connection() {
        let mut d = inline(Fragile);
        let a = ConnId::new(0, 1, 0);
        let b = ConnId::new(0, 2, 0);
        d.open(a, &info());
        d.open(b, &info());
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        d.data(a, b"boom");
        std::panic::set_hook(hook);
        assert_eq!(d.stats.service_panics.load(Ordering::Relaxed), 1);
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
        let (pool, mut links) = Pool::start(Arc::new(Echo), 1, &links(&waker)).unwrap();
        let mut link = links.pop().unwrap();
        let c = ConnId::new(0, 0, 0);
        link.open(c, &info());
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

    /// Answers each complete `;`-terminated frame with its length; shows what it was given.
    struct Frames;
    impl Service for Frames {
        type Session = Vec<usize>;
        fn input_limit(&self) -> usize {
            16
        }
        fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) -> Vec<usize> {
            Vec::new()
        }
        fn data(&self, shown: &mut Vec<usize>, input: &[u8], conn: &mut Conn<'_>) -> usize {
            shown.push(input.len());
            match input.iter().position(|&b| b == b';') {
                Some(end) => {
                    conn.write(format!("{end};").as_bytes());
                    end + 1
                }
                None => 0,
            }
        }
        fn eof(&self, _: &mut Vec<usize>, rest: &[u8], conn: &mut Conn<'_>) {
            conn.write(b"rest:");
            conn.write(rest);
            conn.close();
        }
        fn input_full(&self, _: &mut Vec<usize>, input: &[u8], conn: &mut Conn<'_>) {
            conn.write(format!("full {}", input.len()).as_bytes());
        }
    }

    fn sent(d: &mut dyn Dispatch) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, b) in collect(d) {
            out.extend(b.unwrap_or_else(|| b"<close>".to_vec()));
        }
        out
    }

    #[test]
    fn unconsumed_input_is_shown_again_with_what_follows() {
        let mut d = inline(Frames);
        let a = ConnId::new(0, 0, 0);
        d.open(a, &info());
        d.data(a, b"ab");
        d.data(a, b"c;de");
        d.data(a, b"f;g;h");
        assert_eq!(sent(&mut d), b"3;3;1;");
        d.eof(a);
        assert_eq!(sent(&mut d), b"rest:h<close>");
    }

    #[test]
    fn no_partial_frame_holds_no_buffer() {
        let mut d = inline(Frames);
        let a = ConnId::new(0, 0, 0);
        d.open(a, &info());
        d.data(a, b"x;");
        assert!(d.sessions.get_mut(0, a).unwrap().input.is_none());
        d.data(a, b"xy");
        assert!(d.sessions.get_mut(0, a).unwrap().input.is_some());
        d.data(a, b";");
        assert!(d.sessions.get_mut(0, a).unwrap().input.is_none());
        assert_eq!(sent(&mut d), b"1;2;");
    }

    #[test]
    fn input_over_the_limit_gets_the_answer_then_close() {
        for pieces in [
            &[&b"0123456789abcdefXYZ"[..]][..],
            &[b"01234567", b"89abcdefXY"],
        ] {
            let mut d = inline(Frames);
            let a = ConnId::new(0, 0, 0);
            d.open(a, &info());
            for p in pieces {
                d.data(a, p);
            }
            let out = sent(&mut d);
            assert!(
                out.starts_with(b"full "),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(out.ends_with(b"<close>"));
            // Input after the close is ignored.
            d.data(a, b"1;");
            assert_eq!(sent(&mut d), b"");
        }
    }

    #[test]
    fn deadlines_fire_once_and_moved_or_cleared_ones_do_not() {
        struct Dl;
        impl Service for Dl {
            type Session = ();
            fn open(&self, _: &ConnInfo, conn: &mut Conn<'_>) {
                conn.set_deadline(Instant::now());
            }
            fn data(&self, _: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
                match input {
                    b"clear" => conn.clear_deadline(),
                    b"later" => conn.set_deadline(Instant::now() + Duration::from_secs(3600)),
                    _ => conn.set_deadline(Instant::now()),
                }
                input.len()
            }
            fn deadline(&self, _: &mut (), conn: &mut Conn<'_>) {
                conn.write(b"fired;");
            }
        }
        let mut d = inline(Dl);
        let a = ConnId::new(0, 0, 0);
        d.open(a, &info());
        assert_eq!(sent(&mut d), b"");
        let soon = Instant::now() + Duration::from_millis(1);
        assert!(d.next_deadline().is_some_and(|t| t <= soon));
        d.expire(Instant::now());
        assert_eq!(sent(&mut d), b"fired;");
        d.expire(Instant::now());
        assert_eq!(sent(&mut d), b"", "fired once");
        // Set, then cleared before the driver's copy fell due: never fires.
        d.data(a, b"now");
        let _ = sent(&mut d);
        d.data(a, b"clear");
        d.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(sent(&mut d), b"");
        // Moved later: not at the earlier time.
        d.data(a, b"now");
        d.data(a, b"later");
        let _ = sent(&mut d);
        d.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(sent(&mut d), b"");
        d.closed(a);
        assert!(d.next_deadline().is_none());
    }
}
