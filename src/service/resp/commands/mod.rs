//! The command table and what every command shares: its context, argument helpers and the
//! error replies worded as Redis words them.
//!
//! A command is a function over a [`Ctx`]: the shards it needs are already locked (from the
//! key positions in its [`Spec`]), and it writes its reply into `ctx.out`. It returns an
//! error reply instead when its arguments or the key's type are wrong.

pub mod about;
mod hashes;
mod keys;
mod lists;
mod server;
mod sets;
mod strings;
mod zsets;

use std::sync::OnceLock;

use super::protocol::{parse_f64, parse_i64, reply, Args};
use super::store::Db;
use super::{Client, Shared};

/// The error replies that carry no detail.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// An argument or value that should be an integer is not, or is out of range.
pub const NOT_INT: &str = "ERR value is not an integer or out of range";
/// An argument that should be a float is not.
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
/// Options that do not go together, or an unknown option.
pub const SYNTAX: &str = "ERR syntax error";
/// A write refused under `noeviction` (or with nothing left to evict).
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// A count that must not be negative.
pub const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";

/// An error reply (without the leading `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A fixed message.
    Static(&'static str),
    /// A message with details.
    Owned(String),
}

impl From<&'static str> for Error {
    fn from(s: &'static str) -> Error {
        Error::Static(s)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error::Owned(s)
    }
}

impl Error {
    /// Write it as an error reply.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Error::Static(s) => reply::error(out, s),
            Error::Owned(s) => reply::error(out, s),
        }
    }
}

/// What a command returns.
pub type Res = Result<(), Error>;

/// Refusal of a reply past its [`ReplyBudget`].
pub const TOO_LARGE: &str =
    "ERR reply too large: more than the data held (a key, name or pick repeated many times)";

/// How far one reply may grow: the data the store holds, plus 16 times the request, plus
/// 4 MiB. Only a command that repeats what it asks for (`MGET k k k ...`, `SRANDMEMBER s
/// -1000000`, `COMMAND DOCS client client ...`) goes past it, and is refused rather than
/// built: a 1 MiB request naming a 1 MiB value 100,000 times would otherwise have the
/// server build a 100 GB reply (Redis builds it).
pub struct ReplyBudget {
    end: usize,
}

impl ReplyBudget {
    /// The budget of the reply `ctx.out` is about to get for `args`.
    pub fn new(ctx: &Ctx<'_, '_>, args: Args<'_>) -> ReplyBudget {
        let request: usize = args.iter_from(0).map(|a| a.len() + 16).sum();
        let held = usize::try_from(ctx.shared.ks.used()).unwrap_or(usize::MAX);
        ReplyBudget {
            end: ctx
                .out
                .len()
                .saturating_add(held)
                .saturating_add(request.saturating_mul(16))
                .saturating_add(4 << 20),
        }
    }

    /// Refuse once `out` went past the budget.
    pub fn check(&self, out: &[u8]) -> Res {
        if out.len() > self.end {
            Err(TOO_LARGE.into())
        } else {
            Ok(())
        }
    }
}

/// Flags of a command.
pub mod flag {
    /// May add memory: refused with `-OOM` when over the limit after eviction.
    pub const DENYOOM: u16 = 1;
    /// Changes the keyspace.
    pub const WRITE: u16 = 1 << 1;
    /// Sees the whole keyspace, a shard at a time (SCAN, KEYS, DBSIZE, INFO).
    pub const WALK: u16 = 1 << 2;
    /// Needs the whole keyspace locked at once (FLUSHALL).
    pub const WHOLE: u16 = 1 << 3;
    /// Allowed while the connection is subscribed.
    pub const PUBSUB_OK: u16 = 1 << 4;
    /// Not queued by MULTI: runs at once (MULTI, EXEC, DISCARD, QUIT).
    pub const TXN_CONTROL: u16 = 1 << 5;
    /// Refused inside MULTI: it locks the keyspace itself (SAVE), or answers more than once
    /// (SUBSCRIBE), which a transaction's one array cannot hold.
    pub const NO_MULTI: u16 = 1 << 6;
    /// Read-only.
    pub const READONLY: u16 = 1 << 7;
    /// Server administration.
    pub const ADMIN: u16 = 1 << 8;
}

/// A subcommand of a container command (`CLIENT ID`): checked, as Redis checks it, before
/// the container's code runs.
pub struct Sub {
    /// Lower-case name, without the container's.
    pub name: &'static str,
    /// Arguments including the container's name and the subcommand's; negative means
    /// "at least".
    pub arity: i32,
}

/// A command: name, arity (negative: at least that many), flags, key positions, code.
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Arguments including the name; negative means "at least".
    pub arity: i32,
    /// [`flag`] bits.
    pub flags: u16,
    /// First key argument (0: no key), last (negative: from the end), step.
    pub keys: (i32, i32, i32),
    /// Group, as COMMAND DOCS reports it.
    pub group: &'static str,
    /// Subcommands, for a container command (CLIENT, CONFIG, COMMAND, PUBSUB).
    pub subs: &'static [Sub],
    run: fn(&mut Ctx<'_, '_>, Args<'_>) -> Res,
}

/// True if `n` arguments (the name included) fit `arity`.
fn arity_ok(arity: i32, n: usize) -> bool {
    let n = n as i64;
    let a = i64::from(arity);
    if a >= 0 {
        n == a
    } else {
        n >= -a
    }
}

impl Spec {
    /// True if the spec has flag `f`.
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// True if `n` arguments (the name included) fit the arity.
    pub fn arity_ok(&self, n: usize) -> bool {
        arity_ok(self.arity, n)
    }

    /// The same command, a container of `subs`.
    const fn with_subs(self, subs: &'static [Sub]) -> Spec {
        Spec { subs, ..self }
    }

    /// The subcommand called `name` (any case).
    pub fn sub(&self, name: &[u8]) -> Option<&'static Sub> {
        self.subs.iter().find(|s| is(name, s.name))
    }

    /// The subcommand a call of a container command names, checked as Redis checks it
    /// before running anything: `-ERR unknown subcommand 'x'. Try CLIENT HELP.`, or the
    /// wrong number of arguments for `client|id`. `None` for a command without
    /// subcommands, or a container called without one.
    pub fn subcommand(&self, args: Args<'_>) -> Result<Option<&'static Sub>, Error> {
        if self.subs.is_empty() || args.len() < 2 {
            return Ok(None);
        }
        let name = args.get(1);
        let Some(sub) = self.sub(name) else {
            return Err(Error::Owned(format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                printable(name),
                self.name.to_ascii_uppercase()
            )));
        };
        if !arity_ok(sub.arity, args.len()) {
            return Err(wrong_arity(&full_name(self, Some(sub))));
        }
        Ok(Some(sub))
    }

    /// The key arguments of a call.
    pub fn keys<'a>(&self, args: Args<'a>) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (first, last, step) = self.keys;
        let n = args.len() as i32;
        let last = if last < 0 { n + last } else { last.min(n - 1) };
        let (first, step) = (first.max(0) as usize, step.max(1) as usize);
        let range = if first == 0 || last < first as i32 {
            0..0
        } else {
            first..last as usize + 1
        };
        range.step_by(step).map(move |i| args.get(i))
    }

    /// Run the command.
    pub fn run(&self, ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
        (self.run)(ctx, args)
    }
}

/// Everything a command sees.
pub struct Ctx<'a, 'db> {
    /// The server's shared state.
    pub shared: &'a Shared,
    /// The shards this command holds.
    pub db: &'a mut Db<'db>,
    /// Where the reply goes.
    pub out: &'a mut Vec<u8>,
    /// The calling connection's state.
    pub client: &'a mut Client,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: u16,
    keys: (i32, i32, i32),
    group: &'static str,
    run: fn(&mut Ctx<'_, '_>, Args<'_>) -> Res,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        group,
        subs: &[],
        run,
    }
}

const fn sub(name: &'static str, arity: i32) -> Sub {
    Sub { name, arity }
}

/// The name Redis gives a command or subcommand in errors and COMMAND: `get`, `client|id`.
pub fn full_name(spec: &Spec, sub: Option<&Sub>) -> String {
    match sub {
        Some(sub) => format!("{}|{}", spec.name, sub.name),
        None => spec.name.to_owned(),
    }
}

/// The command or subcommand called `full` (`get`, `CLIENT|ID`), as COMMAND INFO and
/// COMMAND DOCS look them up: `None` for an unknown one, a subcommand of a command without
/// any, or more than one `|`.
pub fn lookup_full(full: &[u8]) -> Option<(&'static Spec, Option<&'static Sub>)> {
    let mut parts = full.splitn(3, |&b| b == b'|');
    let spec = lookup(parts.next()?)?;
    match (parts.next(), parts.next()) {
        (None, _) => Some((spec, None)),
        (Some(sub), None) => Some((spec, Some(spec.sub(sub)?))),
        (Some(_), Some(_)) => None,
    }
}

/// The reply to `CLIENT HELP` and the like: Redis's header line (the container's name as
/// the client typed it, in capitals), the container's own lines, then HELP's.
pub fn help(out: &mut Vec<u8>, container: &[u8], lines: &[&str]) {
    reply::array(out, lines.len() + 3);
    reply::simple(
        out,
        &format!(
            "{} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            printable(container).to_ascii_uppercase()
        ),
    );
    for l in lines {
        reply::simple(out, l);
    }
    reply::simple(out, "HELP");
    reply::simple(out, "    Prints this help.");
}

use flag::*;

const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);
const W: u16 = WRITE | DENYOOM;
const R: u16 = READONLY;

/// Every command.
pub static TABLE: &[Spec] = &[
    // Connection and server.
    spec("ping", -1, PUBSUB_OK, NONE, "connection", server::ping),
    spec("echo", 2, 0, NONE, "connection", server::echo),
    spec(
        "quit",
        -1,
        PUBSUB_OK | TXN_CONTROL,
        NONE,
        "connection",
        server::quit,
    ),
    spec("select", 2, 0, NONE, "connection", server::select),
    spec("hello", -1, 0, NONE, "connection", server::hello),
    spec("client", -2, 0, NONE, "connection", server::client).with_subs(&[
        sub("id", 2),
        sub("setname", 3),
        sub("getname", 2),
        sub("setinfo", 4),
        sub("info", 2),
        sub("list", -2),
        sub("no-evict", 3),
        sub("no-touch", 3),
        sub("reply", 3),
        sub("help", 2),
    ]),
    spec(
        "reset",
        1,
        PUBSUB_OK | TXN_CONTROL,
        NONE,
        "connection",
        server::reset,
    ),
    spec("command", -1, 0, NONE, "server", server::command).with_subs(&[
        sub("count", 2),
        sub("info", -2),
        sub("docs", -2),
        sub("list", -2),
        sub("help", 2),
    ]),
    spec("config", -2, ADMIN, NONE, "server", server::config).with_subs(&[
        sub("get", -3),
        sub("resetstat", 2),
        sub("set", -4),
        sub("help", 2),
    ]),
    spec("info", -1, WALK, NONE, "server", server::info),
    spec("dbsize", 1, R | WALK, NONE, "server", keys::dbsize),
    spec("flushdb", -1, WRITE | WHOLE, NONE, "server", keys::flushall),
    spec(
        "flushall",
        -1,
        WRITE | WHOLE,
        NONE,
        "server",
        keys::flushall,
    ),
    spec("time", 1, 0, NONE, "server", server::time),
    spec("save", 1, ADMIN | NO_MULTI, NONE, "server", server::save),
    spec(
        "bgsave",
        -1,
        ADMIN | NO_MULTI,
        NONE,
        "server",
        server::bgsave,
    ),
    spec("lastsave", 1, 0, NONE, "server", server::lastsave),
    // Transactions.
    spec("multi", 1, TXN_CONTROL, NONE, "transactions", server::multi),
    spec("exec", 1, TXN_CONTROL, NONE, "transactions", server::exec),
    spec(
        "discard",
        1,
        TXN_CONTROL,
        NONE,
        "transactions",
        server::discard,
    ),
    // Pub/sub.
    spec("publish", 3, 0, NONE, "pubsub", server::publish),
    spec(
        "subscribe",
        -2,
        PUBSUB_OK | NO_MULTI,
        NONE,
        "pubsub",
        server::subscribe,
    ),
    spec(
        "unsubscribe",
        -1,
        PUBSUB_OK | NO_MULTI,
        NONE,
        "pubsub",
        server::unsubscribe,
    ),
    spec(
        "psubscribe",
        -2,
        PUBSUB_OK | NO_MULTI,
        NONE,
        "pubsub",
        server::psubscribe,
    ),
    spec(
        "punsubscribe",
        -1,
        PUBSUB_OK | NO_MULTI,
        NONE,
        "pubsub",
        server::punsubscribe,
    ),
    spec("pubsub", -2, 0, NONE, "pubsub", server::pubsub).with_subs(&[
        sub("channels", -2),
        sub("numsub", -2),
        sub("numpat", 2),
        sub("help", 2),
    ]),
    // Keys.
    spec("del", -2, WRITE, ALL, "generic", keys::del),
    spec("unlink", -2, WRITE, ALL, "generic", keys::del),
    spec("exists", -2, R, ALL, "generic", keys::exists),
    spec("type", 2, R, ONE, "generic", keys::type_),
    spec("rename", 3, WRITE, (1, 2, 1), "generic", keys::rename),
    spec("keys", 2, R | WALK, NONE, "generic", keys::keys),
    spec("scan", -2, R | WALK, NONE, "generic", keys::scan),
    spec("randomkey", 1, R | WALK, NONE, "generic", keys::randomkey),
    spec("expire", -3, WRITE, ONE, "generic", keys::expire),
    spec("pexpire", -3, WRITE, ONE, "generic", keys::pexpire),
    spec("expireat", -3, WRITE, ONE, "generic", keys::expireat),
    spec("pexpireat", -3, WRITE, ONE, "generic", keys::pexpireat),
    spec("ttl", 2, R, ONE, "generic", keys::ttl),
    spec("pttl", 2, R, ONE, "generic", keys::pttl),
    spec("persist", 2, WRITE, ONE, "generic", keys::persist),
    // Strings.
    spec("get", 2, R, ONE, "string", strings::get),
    spec("set", -3, W, ONE, "string", strings::set),
    spec("setnx", 3, W, ONE, "string", strings::setnx),
    spec("setex", 4, W, ONE, "string", strings::setex),
    spec("psetex", 4, W, ONE, "string", strings::psetex),
    spec("getdel", 2, WRITE, ONE, "string", strings::getdel),
    spec("getset", 3, W, ONE, "string", strings::getset),
    spec("mget", -2, R, ALL, "string", strings::mget),
    spec("mset", -3, W, (1, -1, 2), "string", strings::mset),
    spec("incr", 2, W, ONE, "string", strings::incr),
    spec("decr", 2, W, ONE, "string", strings::decr),
    spec("incrby", 3, W, ONE, "string", strings::incrby),
    spec("decrby", 3, W, ONE, "string", strings::decrby),
    spec("incrbyfloat", 3, W, ONE, "string", strings::incrbyfloat),
    spec("append", 3, W, ONE, "string", strings::append),
    spec("strlen", 2, R, ONE, "string", strings::strlen),
    spec("getrange", 4, R, ONE, "string", strings::getrange),
    spec("setrange", 4, W, ONE, "string", strings::setrange),
    // Lists.
    spec("lpush", -3, W, ONE, "list", lists::lpush),
    spec("rpush", -3, W, ONE, "list", lists::rpush),
    spec("lpop", -2, WRITE, ONE, "list", lists::lpop),
    spec("rpop", -2, WRITE, ONE, "list", lists::rpop),
    spec("llen", 2, R, ONE, "list", lists::llen),
    spec("lrange", 4, R, ONE, "list", lists::lrange),
    spec("lindex", 3, R, ONE, "list", lists::lindex),
    spec("lset", 4, W, ONE, "list", lists::lset),
    spec("lrem", 4, WRITE, ONE, "list", lists::lrem),
    spec("ltrim", 4, WRITE, ONE, "list", lists::ltrim),
    // Hashes.
    spec("hset", -4, W, ONE, "hash", hashes::hset),
    spec("hmset", -4, W, ONE, "hash", hashes::hmset),
    spec("hsetnx", 4, W, ONE, "hash", hashes::hsetnx),
    spec("hget", 3, R, ONE, "hash", hashes::hget),
    spec("hmget", -3, R, ONE, "hash", hashes::hmget),
    spec("hdel", -3, WRITE, ONE, "hash", hashes::hdel),
    spec("hgetall", 2, R, ONE, "hash", hashes::hgetall),
    spec("hlen", 2, R, ONE, "hash", hashes::hlen),
    spec("hexists", 3, R, ONE, "hash", hashes::hexists),
    spec("hincrby", 4, W, ONE, "hash", hashes::hincrby),
    spec("hkeys", 2, R, ONE, "hash", hashes::hkeys),
    spec("hvals", 2, R, ONE, "hash", hashes::hvals),
    // Sets.
    spec("sadd", -3, W, ONE, "set", sets::sadd),
    spec("srem", -3, WRITE, ONE, "set", sets::srem),
    spec("smembers", 2, R, ONE, "set", sets::smembers),
    spec("sismember", 3, R, ONE, "set", sets::sismember),
    spec("scard", 2, R, ONE, "set", sets::scard),
    spec("spop", -2, WRITE, ONE, "set", sets::spop),
    spec("srandmember", -2, R, ONE, "set", sets::srandmember),
    // Sorted sets.
    spec("zadd", -4, W, ONE, "sorted-set", zsets::zadd),
    spec("zrem", -3, WRITE, ONE, "sorted-set", zsets::zrem),
    spec("zscore", 3, R, ONE, "sorted-set", zsets::zscore),
    spec("zincrby", 4, W, ONE, "sorted-set", zsets::zincrby),
    spec("zcard", 2, R, ONE, "sorted-set", zsets::zcard),
    spec("zrange", -4, R, ONE, "sorted-set", zsets::zrange),
    spec("zrevrange", -4, R, ONE, "sorted-set", zsets::zrevrange),
    spec(
        "zrangebyscore",
        -4,
        R,
        ONE,
        "sorted-set",
        zsets::zrangebyscore,
    ),
    spec("zrank", 3, R, ONE, "sorted-set", zsets::zrank),
    spec("zrevrank", 3, R, ONE, "sorted-set", zsets::zrevrank),
    spec("zpopmin", -2, WRITE, ONE, "sorted-set", zsets::zpopmin),
    spec("zpopmax", -2, WRITE, ONE, "sorted-set", zsets::zpopmax),
];

/// Slots in the command lookup table (a power of two, a few times the commands).
const LOOKUP_SLOTS: usize = 512;

/// Hash of a command name, case folded.
fn name_hash(name: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name {
        h = (h ^ u32::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// The command called `name` (any case): one hash and, usually, one comparison.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    static SLOTS: OnceLock<Vec<Option<&'static Spec>>> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let mut slots = vec![None; LOOKUP_SLOTS];
        for s in TABLE {
            let mut i = name_hash(s.name.as_bytes()) % LOOKUP_SLOTS;
            while slots[i].is_some() {
                i = (i + 1) % LOOKUP_SLOTS;
            }
            slots[i] = Some(s);
        }
        slots
    });
    let mut i = name_hash(name) % LOOKUP_SLOTS;
    loop {
        let s = slots[i]?;
        if s.name.as_bytes().eq_ignore_ascii_case(name) {
            return Some(s);
        }
        i = (i + 1) % LOOKUP_SLOTS;
    }
}

/// `-ERR unknown command 'name', with args beginning with: 'a' 'b' `: as Redis, the
/// arguments are quoted until their list reaches 128 characters, the last one cut to fit.
pub fn unknown_command(args: Args<'_>) -> Error {
    const ARGS_SHOWN: usize = 128;
    let mut list = String::new();
    for a in args.iter_from(1) {
        if list.len() >= ARGS_SHOWN {
            break;
        }
        let a = printable(a);
        // `printable` writes ASCII only: any byte is a character boundary.
        let cut = a.len().min(ARGS_SHOWN - list.len());
        list.push('\'');
        list.push_str(&a[..cut]);
        list.push_str("' ");
    }
    Error::Owned(format!(
        "ERR unknown command '{}', with args beginning with: {list}",
        printable(args.get(0))
    ))
}

/// `-ERR wrong number of arguments for 'name' command`.
pub fn wrong_arity(name: &str) -> Error {
    Error::Owned(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Bytes for an error message: printable ASCII kept, the rest escaped, at most 128.
pub fn printable(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(128) {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(char::from(c));
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

/// An integer argument.
pub fn int(a: &[u8]) -> Result<i64, Error> {
    parse_i64(a).ok_or(Error::Static(NOT_INT))
}

/// A float argument.
pub fn float(a: &[u8]) -> Result<f64, Error> {
    parse_f64(a).ok_or(Error::Static(NOT_FLOAT))
}

/// An optional count argument at `i` that must not be negative.
pub fn count_arg(args: Args<'_>, i: usize) -> Result<Option<usize>, Error> {
    if args.len() <= i {
        return Ok(None);
    }
    // As Redis: anything but a count of 0 or more, a word included, is "out of range".
    let n = int(args.get(i)).map_err(|_| Error::from(NOT_POSITIVE))?;
    if n < 0 {
        return Err(NOT_POSITIVE.into());
    }
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// True if `a` is `word`, ignoring case.
pub fn is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

/// Resolve Redis-style inclusive `start..=stop` indices (negative from the end) over a
/// length: the half-open range, or `None` when empty.
pub fn index_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut stop = if stop < 0 { stop + len } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, stop as usize + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut names: Vec<&str> = TABLE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate command names");
        for s in TABLE {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(s.name.len() <= 16);
            assert!(std::ptr::eq(
                lookup(s.name.to_uppercase().as_bytes()).unwrap(),
                s
            ));
        }
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"").is_none());
    }

    #[test]
    fn every_command_and_subcommand_is_described_once() {
        let names: Vec<String> = TABLE
            .iter()
            .flat_map(|spec| {
                std::iter::once(full_name(spec, None))
                    .chain(spec.subs.iter().map(|s| full_name(spec, Some(s))))
            })
            .collect();
        let described: Vec<&str> = about::all().iter().map(|a| a.name).collect();
        assert_eq!(
            described, names,
            "about.tsv: one line per command, in table order"
        );
        for a in about::all() {
            for field in [a.since, a.summary, a.complexity, a.acl] {
                assert!(!field.is_empty(), "{}: an empty field", a.name);
            }
            for list in [a.flags, a.acl, a.tips] {
                assert!(!list.contains("  ") && list.trim() == list, "{}", a.name);
            }
            assert!(a.acl.split(' ').all(|c| c.starts_with('@')), "{}", a.name);
        }
        for spec in TABLE.iter().filter(|s| !s.subs.is_empty()) {
            assert!(spec.sub(b"HELP").is_some(), "{} has no HELP", spec.name);
            for s in spec.subs {
                assert_eq!(s.name, s.name.to_ascii_lowercase());
                assert!(s.arity.abs() >= 2, "{}|{}", spec.name, s.name);
            }
        }
    }

    #[test]
    fn full_names_are_looked_up_as_redis_does() {
        let name = |full: &[u8]| lookup_full(full).map(|(s, sub)| full_name(s, sub));
        assert_eq!(name(b"GET").as_deref(), Some("get"));
        assert_eq!(name(b"Client|ID").as_deref(), Some("client|id"));
        for unknown in [
            &b"nosuch"[..],
            b"client|nosuch",
            b"client|",
            b"get|x",
            b"client|id|x",
        ] {
            assert_eq!(
                name(unknown),
                None,
                "{:?}",
                String::from_utf8_lossy(unknown)
            );
        }
    }

    #[test]
    fn unknown_command_lists_arguments_up_to_128_characters_as_redis() {
        let msg = |args: &[&str]| {
            let buf = args.concat();
            let mut at = 0;
            let ranges: Vec<(usize, usize)> = args
                .iter()
                .map(|a| {
                    at += a.len();
                    (at - a.len(), at)
                })
                .collect();
            match unknown_command(Args::new(buf.as_bytes(), &ranges)) {
                Error::Owned(m) => m,
                Error::Static(m) => m.to_owned(),
            }
        };
        let head = "ERR unknown command 'FOO', with args beginning with: ";
        assert_eq!(msg(&["FOO"]), head);
        assert_eq!(msg(&["FOO", "a", "b"]), format!("{head}'a' 'b' "));
        // Strings redis-server 7.0 answers: a long argument is cut and ends the list; many
        // short ones are listed until the list passes 128 characters.
        let long = "a".repeat(200);
        assert_eq!(
            msg(&["FOO", &long, "b"]),
            format!("{head}'{}' ", "a".repeat(128))
        );
        let many: Vec<String> = (0..20).map(|i| i.to_string().repeat(3)).collect();
        let mut args = vec!["FOO"];
        args.extend(many.iter().map(String::as_str));
        assert_eq!(
            msg(&args),
            format!(
                "{head}'000' '111' '222' '333' '444' '555' '666' '777' '888' '999' '101010' \
                 '111111' '121212' '131313' '141414' '151515' '161616' '17171' "
            )
        );
    }

    #[test]
    fn key_positions() {
        let buf = b"msetk1v1k2v2";
        let ranges = [(0, 4), (4, 6), (6, 8), (8, 10), (10, 12)];
        let args = Args::new(buf, &ranges);
        let mset = lookup(b"mset").unwrap();
        let keys: Vec<&[u8]> = mset.keys(args).collect();
        assert_eq!(keys, vec![&b"k1"[..], b"k2"]);
        let ping = lookup(b"ping").unwrap();
        assert_eq!(ping.keys(args).count(), 0);
    }

    #[test]
    fn ranges() {
        assert_eq!(index_range(0, -1, 5), Some((0, 5)));
        assert_eq!(index_range(-2, -1, 5), Some((3, 5)));
        assert_eq!(index_range(3, 1, 5), None);
        assert_eq!(index_range(5, 10, 5), None);
        assert_eq!(index_range(-100, 100, 5), Some((0, 5)));
        assert_eq!(index_range(0, -1, 0), None);
    }
}
