//! Commands on keys of any type: existence, removal, renaming, walking, expiry.

use super::{int, is, Ctx, Error, Res, SYNTAX};
use crate::service::resp::glob;
use crate::service::resp::protocol::{reply, Args};
use crate::service::resp::store::{random_below, SHARDS};

pub fn del(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = args.iter_from(1).filter(|k| ctx.db.delete(k)).count();
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn exists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = args.iter_from(1).filter(|k| ctx.db.exists(k)).count();
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn type_(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let name = ctx.db.get(args.get(1)).map_or("none", |v| v.type_name());
    reply::simple(ctx.out, name);
    Ok(())
}

pub fn rename(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (src, dst) = (args.get(1), args.get(2));
    let Some((value, expires)) = ctx.db.take(src) else {
        return Err("ERR no such key".into());
    };
    ctx.db.put(dst, value, expires);
    reply::ok(ctx.out);
    Ok(())
}

pub fn keys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let pattern = args.get(1);
    let all = pattern == b"*";
    let now = ctx.db.now;
    let mut found: Vec<Vec<u8>> = Vec::new();
    for s in 0..SHARDS {
        let sh = ctx.db.shard(s);
        for i in 0..sh.len() {
            let k = sh.at(i).key();
            if !sh.is_expired(i, now) && (all || glob::matches(pattern, k)) {
                found.push(k.to_vec());
            }
        }
    }
    reply::array(ctx.out, found.len());
    for k in &found {
        reply::bulk(ctx.out, k);
    }
    Ok(())
}

/// A SCAN cursor read as Redis reads it (C's `strtoul`): decimal digits, with an optional
/// sign (`-1` is the largest cursor), an empty one read as 0; past 64 bits, or anything
/// else, is no cursor.
fn scan_cursor(text: &[u8]) -> Option<u64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() && digits.len() != text.len() {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { n.wrapping_neg() } else { n })
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]
///
/// The cursor names a shard (high 32 bits) and how far down that shard's table the scan
/// has come (low bits). A shard is walked from its last position to its first: removal
/// moves the last key into the hole, which is a position already visited or yet to come,
/// so a key present for the whole scan is always returned (possibly twice).
pub fn scan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let cursor = scan_cursor(args.get(1)).ok_or(Error::from("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut type_filter = None;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(SYNTAX.into());
        }
        let (a, v) = (args.get(i), args.get(i + 1));
        if is(a, "match") {
            pattern = Some(v);
        } else if is(a, "count") {
            let n = int(v)?;
            if n < 1 {
                return Err(SYNTAX.into());
            }
            count = n as usize;
        } else if is(a, "type") {
            type_filter = Some(v);
        } else {
            return Err(SYNTAX.into());
        }
        i += 2;
    }
    let mut shard = (cursor >> 32) as usize;
    let mut bound = match cursor & 0xFFFF_FFFF {
        0 => usize::MAX,
        low => (low - 1) as usize,
    };
    let now = ctx.db.now;
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut visited = 0;
    while shard < SHARDS && visited < count {
        let sh = ctx.db.shard(shard);
        let mut pos = bound.min(sh.len());
        while pos > 0 && visited < count {
            pos -= 1;
            visited += 1;
            if sh.is_expired(pos, now) {
                continue;
            }
            let e = sh.at(pos);
            if pattern.is_some_and(|p| !glob::matches(p, e.key())) {
                continue;
            }
            if type_filter.is_some_and(|t| !is(t, e.value.type_name())) {
                continue;
            }
            found.push(e.key().to_vec());
        }
        if pos == 0 {
            shard += 1;
            bound = usize::MAX;
        } else {
            bound = pos;
        }
    }
    let next = if shard >= SHARDS {
        0
    } else if bound == usize::MAX {
        (shard as u64) << 32
    } else {
        (shard as u64) << 32 | (bound as u64 + 1)
    };
    reply::array(ctx.out, 2);
    reply::bulk_int(ctx.out, next as i64);
    reply::array(ctx.out, found.len());
    for k in &found {
        reply::bulk(ctx.out, k);
    }
    Ok(())
}

pub fn randomkey(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    let now = ctx.db.now;
    for _ in 0..SHARDS * 4 {
        let sh = ctx.db.shard(random_below(SHARDS));
        if sh.is_empty() {
            continue;
        }
        let i = random_below(sh.len());
        if !sh.is_expired(i, now) {
            let k = sh.at(i).key().to_vec();
            reply::bulk(ctx.out, &k);
            return Ok(());
        }
    }
    for s in 0..SHARDS {
        let sh = ctx.db.shard(s);
        if let Some(i) = (0..sh.len()).find(|&i| !sh.is_expired(i, now)) {
            let k = sh.at(i).key().to_vec();
            reply::bulk(ctx.out, &k);
            return Ok(());
        }
    }
    reply::null(ctx.out);
    Ok(())
}

/// EXPIRE and friends: `unit_ms` is 1000 for seconds; `absolute` for the *AT forms.
fn expire_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    unit_ms: i64,
    absolute: bool,
    cmd: &str,
) -> Res {
    let n = int(args.get(2))?;
    let invalid = || Error::Owned(format!("ERR invalid expire time in '{cmd}' command"));
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let now = ctx.db.now;
    let at = if absolute {
        ms
    } else {
        (now as i64).checked_add(ms).ok_or_else(invalid)?
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in args.iter_from(3) {
        if is(a, "nx") {
            nx = true;
        } else if is(a, "xx") {
            xx = true;
        } else if is(a, "gt") {
            gt = true;
        } else if is(a, "lt") {
            lt = true;
        } else {
            return Err(format!("ERR Unsupported option {}", super::printable(a)).into());
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    let set = ctx.db.write(args.get(1), |v, exp| {
        if v.is_none() {
            return false;
        }
        let cur = *exp;
        // No expiry counts as an infinite one.
        let ok = (!nx || cur == 0)
            && (!xx || cur != 0)
            && (!gt || (cur != 0 && at > cur as i64))
            && (!lt || cur == 0 || at < cur as i64);
        if !ok {
            return false;
        }
        if at <= now as i64 {
            *v = None;
        } else {
            *exp = at as u64;
        }
        true
    });
    reply::int(ctx.out, i64::from(set));
    Ok(())
}

pub fn expire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    expire_generic(ctx, args, 1000, false, "expire")
}

pub fn pexpire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    expire_generic(ctx, args, 1, false, "pexpire")
}

pub fn expireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    expire_generic(ctx, args, 1000, true, "expireat")
}

pub fn pexpireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    expire_generic(ctx, args, 1, true, "pexpireat")
}

fn ttl_generic(ctx: &mut Ctx<'_, '_>, args: Args<'_>, ms: bool) -> Res {
    let now = ctx.db.now;
    let n = match ctx.db.entry(args.get(1)) {
        None => -2,
        Some(e) if e.expires == 0 => -1,
        Some(e) => {
            let left = e.expires.saturating_sub(now) as i64;
            if ms {
                left
            } else {
                (left + 500) / 1000
            }
        }
    };
    reply::int(ctx.out, n);
    Ok(())
}

pub fn ttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    ttl_generic(ctx, args, false)
}

pub fn pttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    ttl_generic(ctx, args, true)
}

pub fn persist(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let done = ctx.db.write(args.get(1), |v, exp| {
        if v.is_some() && *exp != 0 {
            *exp = 0;
            true
        } else {
            false
        }
    });
    reply::int(ctx.out, i64::from(done));
    Ok(())
}

pub fn dbsize(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> Res {
    let n: usize = (0..SHARDS).map(|s| ctx.db.shard(s).len()).sum();
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn flushall(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    for a in args.iter_from(1) {
        if !is(a, "async") && !is(a, "sync") {
            return Err(SYNTAX.into());
        }
    }
    if args.len() > 2 {
        return Err(SYNTAX.into());
    }
    for s in 0..SHARDS {
        let sh = ctx.db.shard(s);
        sh.clear();
        sh.writes += 1;
    }
    reply::ok(ctx.out);
    Ok(())
}
