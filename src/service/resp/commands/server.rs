//! Connection, server, pub/sub and transaction commands.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::about::{self, about, About};
use super::{
    flag, full_name, help, int, is, lookup_full, printable, Ctx, Error, ReplyBudget, Res, Spec,
    Sub, SYNTAX, TABLE,
};
use crate::service::resp::glob;
use crate::service::resp::protocol::{reply, Args};
use crate::service::resp::pubsub::Subscriptions;
use crate::service::resp::store::unix_ms;
use crate::service::resp::store::{Keyspace, SHARDS};
use crate::service::resp::{Client, Listed, Multi, Shared, Shown};

/// The version reported to clients, which some of them check for features.
pub const REDIS_VERSION: &str = "7.0.0";

/// HELLO with a protocol version this store does not speak.
const NOPROTO: &str = "NOPROTO unsupported protocol version";

pub fn ping(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    if args.len() > 2 {
        return Err(super::wrong_arity("ping"));
    }
    if ctx.client.subscribed() {
        reply::array(ctx.out, 2);
        reply::bulk(ctx.out, b"pong");
        reply::bulk(ctx.out, if args.len() == 2 { args.get(1) } else { b"" });
    } else if args.len() == 2 {
        reply::bulk(ctx.out, args.get(1));
    } else {
        reply::simple(ctx.out, "PONG");
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    reply::bulk(ctx.out, args.get(1));
    Ok(())
}

pub fn quit(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    reply::ok(ctx.out);
    ctx.client.quit = true;
    Ok(())
}

pub fn select(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    if int(args.get(1))? != 0 {
        return Err("ERR DB index is out of range".into());
    }
    reply::ok(ctx.out);
    Ok(())
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`, as Redis 7.0 answers
/// it: a version other than 2 or 3 is refused first; the options are then read in order,
/// each applied as it is read, until one is wrong (`-ERR Syntax error in HELLO option 'x'`,
/// a refused password, a name with spaces). Authentication is Redis's without users or
/// passwords configured: the `default` user with any password. Version 3 passes the same
/// checks, then answers `-NOPROTO` (RESP2 only) without changing anything.
pub fn hello(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let mut resp3 = false;
    if args.len() >= 2 {
        let v = int(args.get(1))
            .map_err(|_| Error::from("ERR Protocol version is not an integer or out of range"))?;
        if v != 2 && v != 3 {
            return Err(NOPROTO.into());
        }
        resp3 = v == 3;
    }
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args.get(i);
        if is(opt, "auth") && more >= 2 {
            if args.get(i + 1) != b"default" {
                return Err("WRONGPASS invalid username-password pair or user is disabled.".into());
            }
            i += 3;
        } else if is(opt, "setname") && more >= 1 {
            let name = valid_name(args.get(i + 1))?;
            if !resp3 {
                ctx.client.listed.state().0 = (!name.is_empty()).then(|| name.into());
            }
            i += 2;
        } else {
            return Err(format!("ERR Syntax error in HELLO option '{}'", printable(opt)).into());
        }
    }
    if resp3 {
        return Err(NOPROTO.into());
    }
    let out = &mut *ctx.out;
    reply::array(out, 14);
    reply::bulk(out, b"server");
    reply::bulk(out, b"redis");
    reply::bulk(out, b"version");
    reply::bulk(out, REDIS_VERSION.as_bytes());
    reply::bulk(out, b"proto");
    reply::int(out, 2);
    reply::bulk(out, b"id");
    reply::int(out, ctx.client.id as i64);
    reply::bulk(out, b"mode");
    reply::bulk(out, b"standalone");
    reply::bulk(out, b"role");
    reply::bulk(out, b"master");
    reply::bulk(out, b"modules");
    reply::array(out, 0);
    Ok(())
}

fn valid_name(name: &[u8]) -> Result<&[u8], Error> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        );
    }
    Ok(name)
}

/// One line of CLIENT LIST and CLIENT INFO (without its newline).
fn client_line(l: &Listed, name: Option<&[u8]>, shown: Shown, now_ms: u64) -> String {
    let flags = match (shown.sub + shown.psub > 0, shown.multi >= 0) {
        (true, _) => "P",
        (false, true) => "x",
        (false, false) => "N",
    };
    format!(
        "id={} addr={} laddr={} name={} age={} idle={} flags={flags} db=0 sub={} psub={} multi={} cmd={}",
        l.id,
        l.peer,
        l.local,
        String::from_utf8_lossy(name.unwrap_or_default()),
        now_ms.saturating_sub(l.since_ms) / 1000,
        now_ms.saturating_sub(l.last_ms.load(Ordering::Relaxed)) / 1000,
        shown.sub,
        shown.psub,
        shown.multi,
        shown.cmd.unwrap_or("NULL"),
    )
}

/// The caller's name and state now (not as of its last batch: it is running CLIENT).
fn own_state(c: &Client, now_ms: u64) -> (Option<Box<[u8]>>, Shown) {
    c.listed.last_ms.store(now_ms, Ordering::Relaxed);
    let shown = Shown {
        cmd: Some("client"),
        ..c.shown()
    };
    (c.listed.state().0.clone(), shown)
}

/// The caller's own line.
fn own_line(c: &Client, now_ms: u64) -> String {
    let (name, shown) = own_state(c, now_ms);
    client_line(&c.listed, name.as_deref(), shown, now_ms)
}

/// CLIENT LIST [TYPE type] [ID id ...]: every client, or those of a type or with those ids.
fn client_list(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let mut kind: Option<bool> = None; // Some(true): pubsub clients only; Some(false): normal.
    let mut ids: Option<Vec<u64>> = None;
    let mut nobody = false;
    let mut i = 2;
    while i < args.len() {
        if is(args.get(i), "type") && i + 1 < args.len() {
            let t = args.get(i + 1);
            kind = Some(if is(t, "pubsub") {
                true
            } else if is(t, "normal") {
                false
            } else if is(t, "master") || is(t, "replica") || is(t, "slave") {
                // No replication here: no such clients.
                nobody = true;
                false
            } else {
                return Err(format!("ERR Unknown client type '{}'", printable(t)).into());
            });
            i += 2;
        } else if is(args.get(i), "id") && i + 1 < args.len() {
            let mut wanted = Vec::new();
            for a in (i + 1..args.len()).map(|j| args.get(j)) {
                match int(a) {
                    Ok(id) if id > 0 => wanted.push(id as u64),
                    _ => return Err("ERR Invalid client ID".into()),
                }
            }
            wanted.sort_unstable();
            wanted.dedup();
            ids = Some(wanted);
            break;
        } else {
            return Err(SYNTAX.into());
        }
    }
    if nobody {
        reply::bulk(ctx.out, b"");
        return Ok(());
    }
    let now = unix_ms();
    let me = ctx.client.id;
    let listed: Vec<Arc<Listed>> = {
        let all = ctx
            .shared
            .listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &ids {
            // One lookup per id (sorted, deduplicated): each client once, in the order of
            // connection, as Redis lists them.
            Some(ids) => ids.iter().filter_map(|id| all.get(id)).cloned().collect(),
            None => all.values().cloned().collect(),
        }
    };
    let mut text = String::new();
    for l in &listed {
        let (name, shown) = if l.id == me {
            own_state(ctx.client, now)
        } else {
            let st = l.state();
            (st.0.clone(), st.1)
        };
        if kind.is_some_and(|pubsub| pubsub != (shown.sub + shown.psub > 0)) {
            continue;
        }
        text.push_str(&client_line(l, name.as_deref(), shown, now));
        text.push('\n');
    }
    reply::bulk(ctx.out, text.as_bytes());
    Ok(())
}

/// CLIENT HELP: Redis's lines for the subcommands this store has.
const CLIENT_HELP: &[&str] = &[
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
];

/// CLIENT: the subcommand and its number of arguments are already checked.
pub fn client(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let sub = args.get(1);
    if is(sub, "id") {
        reply::int(ctx.out, ctx.client.id as i64);
    } else if is(sub, "setname") {
        let name = valid_name(args.get(2))?;
        ctx.client.listed.state().0 = (!name.is_empty()).then(|| name.into());
        reply::ok(ctx.out);
    } else if is(sub, "getname") {
        match &ctx.client.listed.state().0 {
            Some(name) => reply::bulk(ctx.out, name),
            None => reply::null(ctx.out),
        }
    } else if is(sub, "info") {
        let line = own_line(ctx.client, unix_ms()) + "\n";
        reply::bulk(ctx.out, line.as_bytes());
    } else if is(sub, "list") {
        return client_list(ctx, args);
    } else if is(sub, "help") {
        help(ctx.out, args.get(0), CLIENT_HELP);
    } else if is(sub, "reply") {
        // The OK is written either way, so that an EXEC's array stays whole; the loop that
        // runs commands drops the replies that OFF and SKIP say to, this one's included.
        let mode = args.get(2);
        if is(mode, "on") {
            ctx.client.reply_off = false;
            ctx.client.reply_skip = 0;
        } else if is(mode, "off") {
            ctx.client.reply_off = true;
        } else if is(mode, "skip") {
            if !ctx.client.reply_off {
                ctx.client.reply_skip = 2;
            }
        } else {
            return Err(SYNTAX.into());
        }
        reply::ok(ctx.out);
    } else {
        // SETINFO, NO-EVICT, NO-TOUCH: accepted, and nothing changes.
        reply::ok(ctx.out);
    }
    Ok(())
}

pub fn reset(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    ctx.client.multi = None;
    // A SKIP in force still silences this reply, as in Redis; OFF ends here.
    ctx.client.reply_off = false;
    ctx.client.listed.state().0 = None;
    if let Some(s) = &mut ctx.client.subs {
        if s.count() > 0 {
            s.channels.clear();
            s.patterns.clear();
            ctx.client.subs_changed = true;
        }
    }
    reply::simple(ctx.out, "RESET");
    Ok(())
}

/// A status reply for each word of a space-separated list, in an array.
fn status_words(out: &mut Vec<u8>, list: &'static str) {
    let words = about::words(list);
    reply::array(out, words.len());
    for w in words {
        reply::simple(out, w);
    }
}

/// One command's (or subcommand's) COMMAND INFO entry, as Redis 7.0 shapes it: name,
/// arity, flags, first key, last key, key step, ACL categories, tips, key specifications
/// (none here) and subcommands.
fn command_info(out: &mut Vec<u8>, spec: &Spec, sub: Option<&Sub>) {
    let name = full_name(spec, sub);
    let a = about(&name);
    let (arity, keys) = match sub {
        Some(sub) => (sub.arity, (0, 0, 0)),
        None => (spec.arity, spec.keys),
    };
    reply::array(out, 10);
    reply::bulk(out, name.as_bytes());
    reply::int(out, i64::from(arity));
    status_words(out, a.flags);
    reply::int(out, i64::from(keys.0));
    reply::int(out, i64::from(keys.1));
    reply::int(out, i64::from(keys.2));
    status_words(out, a.acl);
    let tips = about::words(a.tips);
    reply::array(out, tips.len());
    for t in tips {
        reply::bulk(out, t.as_bytes());
    }
    reply::array(out, 0);
    let subs = if sub.is_none() { spec.subs } else { &[] };
    reply::array(out, subs.len());
    for s in subs {
        command_info(out, spec, Some(s));
    }
}

/// One command's COMMAND DOCS entry: its name, then a map of summary, since, group,
/// complexity, deprecation and, for a container, its subcommands' entries.
fn command_docs(out: &mut Vec<u8>, spec: &Spec, sub: Option<&Sub>) {
    let name = full_name(spec, sub);
    let a: &About = about(&name);
    let subs = if sub.is_none() { spec.subs } else { &[] };
    reply::bulk(out, name.as_bytes());
    let fields = 4 + if a.deprecated.is_some() { 3 } else { 0 } + usize::from(!subs.is_empty());
    reply::array(out, fields * 2);
    for (k, v) in [
        ("summary", a.summary),
        ("since", a.since),
        ("group", spec.group),
        ("complexity", a.complexity),
    ] {
        reply::bulk(out, k.as_bytes());
        reply::bulk(out, v.as_bytes());
    }
    if let Some((since, by)) = a.deprecated {
        reply::bulk(out, b"doc_flags");
        reply::array(out, 1);
        reply::simple(out, "deprecated");
        reply::bulk(out, b"deprecated_since");
        reply::bulk(out, since.as_bytes());
        reply::bulk(out, b"replaced_by");
        reply::bulk(out, by.as_bytes());
    }
    if !subs.is_empty() {
        reply::bulk(out, b"subcommands");
        reply::array(out, subs.len() * 2);
        for s in subs {
            command_docs(out, spec, Some(s));
        }
    }
}

/// COMMAND HELP: Redis's lines for the subcommands this store has.
const COMMAND_HELP: &[&str] = &[
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
];

/// What `COMMAND LIST FILTERBY` keeps.
enum Filter<'a> {
    /// MODULE name: commands of a loaded module (there are none).
    Module,
    /// ACLCAT category, without its `@`.
    AclCat(&'a [u8]),
    /// PATTERN glob, over the full name, in any case.
    Pattern(Vec<u8>),
}

impl Filter<'_> {
    fn keeps(&self, name: &str) -> bool {
        match self {
            Filter::Module => false,
            Filter::AclCat(cat) => about(name).in_category(cat),
            Filter::Pattern(p) => crate::service::resp::glob::matches(p, name.as_bytes()),
        }
    }
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]`: every command
/// and subcommand (`client|id`), or those the filter keeps.
fn command_list(out: &mut Vec<u8>, args: Args<'_>) -> Res {
    let filter = match args.len() {
        2 => None,
        5 if is(args.get(2), "filterby") => {
            let (kind, arg) = (args.get(3), args.get(4));
            Some(if is(kind, "module") {
                Filter::Module
            } else if is(kind, "aclcat") {
                Filter::AclCat(arg)
            } else if is(kind, "pattern") {
                Filter::Pattern(arg.to_ascii_lowercase())
            } else {
                return Err(SYNTAX.into());
            })
        }
        _ => return Err(SYNTAX.into()),
    };
    let names: Vec<String> = TABLE
        .iter()
        .flat_map(|spec| {
            std::iter::once(full_name(spec, None))
                .chain(spec.subs.iter().map(|s| full_name(spec, Some(s))))
        })
        .filter(|name| filter.as_ref().is_none_or(|f| f.keeps(name)))
        .collect();
    reply::array(out, names.len());
    for n in names {
        reply::bulk(out, n.as_bytes());
    }
    Ok(())
}

/// COMMAND: the subcommand and its number of arguments are already checked.
pub fn command(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let budget = ReplyBudget::new(ctx, args);
    let out = &mut *ctx.out;
    let all = || TABLE.iter().map(|s| (s, None));
    if args.len() == 1 {
        reply::array(out, TABLE.len());
        for (s, sub) in all() {
            command_info(out, s, sub);
        }
        return Ok(());
    }
    let sub = args.get(1);
    if is(sub, "count") {
        reply::int(out, TABLE.len() as i64);
    } else if is(sub, "info") {
        if args.len() == 2 {
            reply::array(out, TABLE.len());
            for (s, sub) in all() {
                command_info(out, s, sub);
            }
        } else {
            reply::array(out, args.len() - 2);
            for name in args.iter_from(2) {
                match lookup_full(name) {
                    Some((s, sub)) => command_info(out, s, sub),
                    None => reply::null(out),
                }
                budget.check(out)?;
            }
        }
    } else if is(sub, "docs") {
        let found: Vec<_> = if args.len() == 2 {
            all().collect()
        } else {
            args.iter_from(2).filter_map(lookup_full).collect()
        };
        reply::array(out, found.len() * 2);
        for (s, sub) in found {
            command_docs(out, s, sub);
            budget.check(out)?;
        }
    } else if is(sub, "list") {
        return command_list(out, args);
    } else {
        help(out, args.get(0), COMMAND_HELP);
    }
    Ok(())
}

/// The parameters CONFIG GET knows, with their values.
fn config_params(shared: &Shared) -> Vec<(&'static str, String)> {
    let ks = &shared.ks;
    vec![
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("maxmemory", ks.maxmemory().to_string()),
        ("maxmemory-policy", ks.policy().name().into()),
        (
            "proto-max-bulk-len",
            shared.config.proto_max_bulk_len.to_string(),
        ),
        (
            "dbfilename",
            shared
                .config
                .snapshot
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    ]
}

/// CONFIG HELP: Redis's lines for the subcommands this store has.
const CONFIG_HELP: &[&str] = &[
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
];

/// CONFIG: the subcommand and its number of arguments are already checked.
pub fn config(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let sub = args.get(1);
    if is(sub, "get") {
        let params = config_params(ctx.shared);
        let hits: Vec<&(&str, String)> = params
            .iter()
            .filter(|(name, _)| {
                args.iter_from(2)
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
            })
            .collect();
        reply::array(ctx.out, hits.len() * 2);
        for (name, value) in hits {
            reply::bulk(ctx.out, name.as_bytes());
            reply::bulk(ctx.out, value.as_bytes());
        }
    } else if is(sub, "resetstat") {
        reply::ok(ctx.out);
    } else if is(sub, "set") {
        return Err("ERR CONFIG SET is not supported: settings are given at start".into());
    } else {
        help(ctx.out, args.get(0), CONFIG_HELP);
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", units[u])
}

pub fn info(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let want = |name: &str| {
        args.len() == 1
            || args
                .iter_from(1)
                .any(|a| is(a, name) || is(a, "all") || is(a, "everything") || is(a, "default"))
    };
    let shared = ctx.shared;
    let ks: &Keyspace = &shared.ks;
    let (mut keys, mut volatile, mut hits, mut misses) = (0, 0, 0, 0);
    let (mut expired, mut evicted, mut writes) = (0, 0, 0);
    for s in 0..SHARDS {
        let sh = ctx.db.shard(s);
        keys += sh.len() as u64;
        volatile += sh.volatile_len() as u64;
        hits += sh.hits;
        misses += sh.misses;
        expired += sh.expired;
        evicted += sh.evicted;
        writes += sh.writes;
    }
    let mut s = String::new();
    let uptime = shared.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            s,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
             ringport_version:{}\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            uptime / 86400,
        );
    }
    if want("clients") {
        let _ = write!(
            s,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            shared.clients.load(Ordering::Relaxed)
        );
    }
    if want("memory") {
        let used = ks.used();
        let _ = write!(
            s,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nmaxmemory:{}\r\n\
             maxmemory_human:{}\r\nmaxmemory_policy:{}\r\n\r\n",
            human(used),
            ks.maxmemory(),
            human(ks.maxmemory()),
            ks.policy().name()
        );
    }
    if want("persistence") {
        let p = &shared.persist;
        let _ = write!(
            s,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:{}\r\n\
             rdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\n\
             aof_enabled:0\r\n\r\n",
            writes.saturating_sub(ks.saved_writes()),
            u8::from(p.bgsave_running.load(Ordering::Relaxed)),
            p.last_save.load(Ordering::Relaxed),
            if p.last_ok.load(Ordering::Relaxed) {
                "ok"
            } else {
                "err"
            },
        );
    }
    if want("stats") {
        let _ = write!(
            s,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             keyspace_hits:{hits}\r\nkeyspace_misses:{misses}\r\nexpired_keys:{expired}\r\n\
             evicted_keys:{evicted}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\n\r\n",
            shared.connections.load(Ordering::Relaxed),
            shared.commands(),
            shared.pubsub.channels(None).len(),
            shared.pubsub.numpat(),
        );
    }
    if want("keyspace") {
        s.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(s, "db0:keys={keys},expires={volatile},avg_ttl=0\r\n");
        }
    }
    // Sections end with a blank line; the reply ends after the last line's CRLF.
    let text = s
        .strip_suffix("\r\n\r\n")
        .map_or(s.as_str(), |t| &s[..t.len() + 2]);
    reply::bulk(ctx.out, text.as_bytes());
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    reply::array(ctx.out, 2);
    reply::bulk_int(ctx.out, d.as_secs() as i64);
    reply::bulk_int(ctx.out, i64::from(d.subsec_micros()));
    Ok(())
}

const NO_SNAPSHOT: &str = "ERR no snapshot file configured (start with --snapshot FILE)";
const SAVING: &str = "ERR Background save already in progress";

pub fn save(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    let shared = ctx.shared;
    if shared.config.snapshot.is_none() {
        return Err(NO_SNAPSHOT.into());
    }
    let Ok(_guard) = shared.persist.saving.try_lock() else {
        return Err(SAVING.into());
    };
    match shared.save_now(true) {
        Ok(_) => reply::ok(ctx.out),
        Err(e) => return Err(format!("ERR snapshot failed: {e}").into()),
    }
    Ok(())
}

pub fn bgsave(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    if args.len() > 2 || (args.len() == 2 && !is(args.get(1), "schedule")) {
        return Err(SYNTAX.into());
    }
    let Some(shared) = ctx.shared.me.upgrade() else {
        return Err("ERR the server is stopping".into());
    };
    if shared.config.snapshot.is_none() {
        return Err(NO_SNAPSHOT.into());
    }
    if shared.persist.bgsave_running.swap(true, Ordering::AcqRel) {
        return Err(SAVING.into());
    }
    let spawned = std::thread::Builder::new()
        .name("ringport-bgsave".into())
        .spawn(move || {
            {
                let _guard = shared
                    .persist
                    .saving
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = shared.save_now(false);
            }
            shared
                .persist
                .bgsave_running
                .store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        ctx.shared
            .persist
            .bgsave_running
            .store(false, Ordering::Release);
        return Err(format!("ERR cannot start the background save: {e}").into());
    }
    reply::simple(ctx.out, "Background saving started");
    Ok(())
}

pub fn lastsave(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    reply::int(
        ctx.out,
        ctx.shared.persist.last_save.load(Ordering::Relaxed) as i64,
    );
    Ok(())
}

pub fn multi(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    if ctx.client.multi.is_some() {
        return Err("ERR MULTI calls can not be nested".into());
    }
    ctx.client.multi = Some(Box::default());
    reply::ok(ctx.out);
    Ok(())
}

pub fn discard(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    if ctx.client.multi.take().is_none() {
        return Err("ERR DISCARD without MULTI".into());
    }
    reply::ok(ctx.out);
    Ok(())
}

pub fn exec(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    let Some(m) = ctx.client.multi.take() else {
        return Err("ERR EXEC without MULTI".into());
    };
    if m.failed {
        return Err("EXECABORT Transaction discarded because of previous errors.".into());
    }
    exec_queued(ctx.shared, ctx.client, ctx.out, &m, ctx.db.now);
    Ok(())
}

/// Run a transaction's queued commands as one step: every shard any of them touches is
/// locked (in order) before the first runs and released after the last.
pub fn exec_queued(shared: &Shared, client: &mut Client, out: &mut Vec<u8>, m: &Multi, now: u64) {
    let ks = &shared.ks;
    let whole = m
        .queued
        .iter()
        .any(|(s, _)| s.has(flag::WHOLE | flag::WALK));
    let mut db = if whole {
        ks.lock_all(now)
    } else {
        let shards: Vec<usize> = m
            .queued
            .iter()
            .flat_map(|(s, a)| s.keys(a.view()).collect::<Vec<_>>())
            .map(|k| Keyspace::shard_of(crate::service::resp::value::hash_bytes(k)))
            .collect();
        ks.lock_shards(shards, now)
    };
    reply::array(out, m.queued.len());
    for (spec, args) in &m.queued {
        let mark = out.len();
        let mut ctx = Ctx {
            shared,
            db: &mut db,
            out,
            client,
        };
        if let Err(e) = spec.run(&mut ctx, args.view()) {
            out.truncate(mark);
            e.write(out);
        }
    }
}

fn subs(client: &mut Client) -> &mut Subscriptions {
    client.subs.get_or_insert_with(Box::default)
}

fn confirm(out: &mut Vec<u8>, kind: &[u8], name: Option<&[u8]>, count: usize) {
    reply::array(out, 3);
    reply::bulk(out, kind);
    match name {
        Some(n) => reply::bulk(out, n),
        None => reply::null(out),
    }
    reply::int(out, count as i64);
}

fn subscribe_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, pattern: bool) -> Res {
    let s = subs(ctx.client);
    for name in args.iter_from(1) {
        if pattern {
            s.patterns.insert(name.into());
        } else {
            s.channels.insert(name.into());
        }
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        confirm(ctx.out, kind, Some(name), s.count());
    }
    ctx.client.subs_changed = true;
    Ok(())
}

fn unsubscribe_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, pattern: bool) -> Res {
    let kind: &[u8] = if pattern {
        b"punsubscribe"
    } else {
        b"unsubscribe"
    };
    let s = subs(ctx.client);
    let (set, other) = if pattern {
        (&mut s.patterns, s.channels.len())
    } else {
        (&mut s.channels, s.patterns.len())
    };
    let names: Vec<Box<[u8]>> = if args.len() == 1 {
        set.iter().cloned().collect()
    } else {
        args.iter_from(1).map(Into::into).collect()
    };
    if names.is_empty() {
        confirm(ctx.out, kind, None, set.len() + other);
    }
    for n in &names {
        set.remove(n);
        confirm(ctx.out, kind, Some(n), set.len() + other);
    }
    ctx.client.subs_changed = true;
    Ok(())
}

pub fn subscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    subscribe_generic(ctx, args, false)
}

pub fn psubscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    subscribe_generic(ctx, args, true)
}

pub fn unsubscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    unsubscribe_generic(ctx, args, false)
}

pub fn punsubscribe(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    unsubscribe_generic(ctx, args, true)
}

pub fn publish(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = ctx.shared.pubsub.publish(args.get(1), args.get(2));
    reply::int(ctx.out, n as i64);
    Ok(())
}

/// PUBSUB HELP: Redis's lines for the subcommands this store has.
const PUBSUB_HELP: &[&str] = &[
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
];

/// PUBSUB: the subcommand and its number of arguments are already checked.
pub fn pubsub(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let sub = args.get(1);
    let ps = &ctx.shared.pubsub;
    if is(sub, "channels") {
        if args.len() > 3 {
            return Err(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
                printable(sub)
            )
            .into());
        }
        let chans = ps.channels((args.len() == 3).then(|| args.get(2)));
        reply::array(ctx.out, chans.len());
        for c in chans {
            reply::bulk(ctx.out, &c);
        }
    } else if is(sub, "numsub") {
        reply::array(ctx.out, (args.len() - 2) * 2);
        for c in args.iter_from(2) {
            reply::bulk(ctx.out, c);
            reply::int(ctx.out, ps.numsub(c) as i64);
        }
    } else if is(sub, "numpat") {
        reply::int(ctx.out, ps.numpat() as i64);
    } else {
        help(ctx.out, args.get(0), PUBSUB_HELP);
    }
    Ok(())
}
