//! String commands.

use super::{float, int, is, Ctx, Error, ReplyBudget, Res, NOT_INT, SYNTAX, WRONGTYPE};
use crate::service::resp::protocol::{format_float_plain, parse_f64, parse_i64, reply, Args};
use crate::service::resp::value::Value;

pub fn get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    match ctx.db.get(args.get(1)) {
        None => reply::null(ctx.out),
        Some(Value::Str(s)) => reply::bulk(ctx.out, s),
        Some(_) => return Err(WRONGTYPE.into()),
    }
    Ok(())
}

/// Replace `v` with the string `val`, reusing its buffer when it holds one.
fn store_str(v: &mut Option<Value>, val: &[u8]) {
    if let Some(Value::Str(s)) = v {
        s.clear();
        s.extend_from_slice(val);
    } else {
        *v = Some(Value::Str(val.to_vec()));
    }
}

#[derive(PartialEq)]
enum Ttl {
    Clear,
    Keep,
    At(u64),
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
pub fn set(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    // The time option given (its kind and the index of its number): it may be repeated,
    // as Redis allows, and the last one counts; it is read only once the options parsed.
    let mut timed: Option<(usize, usize)> = None;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        let kind = ["ex", "px", "exat", "pxat"].iter().position(|w| is(a, w));
        if is(a, "nx") && !xx {
            nx = true;
        } else if is(a, "xx") && !nx {
            xx = true;
        } else if is(a, "get") {
            get = true;
        } else if is(a, "keepttl") && timed.is_none() {
            keep = true;
        } else if let Some(kind) =
            kind.filter(|&k| !keep && timed.is_none_or(|(t, _)| t == k) && i + 1 < args.len())
        {
            i += 1;
            timed = Some((kind, i));
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    let ttl = match timed {
        Some((kind, at)) => Ttl::At(expire_at(ctx.db.now, int(args.get(at))?, kind, "set")?),
        None if keep => Ttl::Keep,
        None => Ttl::Clear,
    };
    let val = args.get(2);
    let out = &mut *ctx.out;
    ctx.db.write(args.get(1), |v, exp| {
        let exists = v.is_some();
        if get {
            match v {
                None => reply::null(out),
                Some(Value::Str(s)) => reply::bulk(out, s),
                Some(_) => return Err(Error::from(WRONGTYPE)),
            }
        }
        if (nx && exists) || (xx && !exists) {
            if !get {
                reply::null(out);
            }
            return Ok(());
        }
        store_str(v, val);
        match ttl {
            Ttl::Clear => *exp = 0,
            Ttl::Keep => {}
            Ttl::At(at) => *exp = at,
        }
        if !get {
            reply::ok(out);
        }
        Ok(())
    })
}

/// The absolute expiry for `n` in unit `kind` (0 EX, 1 PX, 2 EXAT, 3 PXAT): positive, and
/// representable.
pub fn expire_at(now: u64, n: i64, kind: usize, cmd: &str) -> Result<u64, Error> {
    let invalid = || Error::Owned(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let ms = if kind % 2 == 0 {
        n.checked_mul(1000).ok_or_else(invalid)?
    } else {
        n
    };
    let at = if kind < 2 {
        (now as i64).checked_add(ms).ok_or_else(invalid)?
    } else {
        ms
    };
    Ok(at as u64)
}

pub fn setnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let val = args.get(2);
    let created = ctx.db.write(args.get(1), |v, _| {
        if v.is_some() {
            return false;
        }
        store_str(v, val);
        true
    });
    reply::int(ctx.out, i64::from(created));
    Ok(())
}

fn set_with_ttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>, kind: usize, cmd: &str) -> Res {
    let n = int(args.get(2))?;
    let at = expire_at(ctx.db.now, n, kind, cmd)?;
    let val = args.get(3);
    ctx.db.write(args.get(1), |v, exp| {
        store_str(v, val);
        *exp = at;
    });
    reply::ok(ctx.out);
    Ok(())
}

pub fn setex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    set_with_ttl(ctx, args, 0, "setex")
}

pub fn psetex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    set_with_ttl(ctx, args, 1, "psetex")
}

pub fn getdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let key = args.get(1);
    match ctx.db.get(key) {
        None => reply::null(ctx.out),
        Some(Value::Str(s)) => {
            reply::bulk(ctx.out, s);
            ctx.db.delete(key);
        }
        Some(_) => return Err(WRONGTYPE.into()),
    }
    Ok(())
}

pub fn getset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let val = args.get(2);
    let out = &mut *ctx.out;
    ctx.db.write(args.get(1), |v, exp| {
        match v {
            None => reply::null(out),
            Some(Value::Str(s)) => reply::bulk(out, s),
            Some(_) => return Err(Error::from(WRONGTYPE)),
        }
        store_str(v, val);
        *exp = 0;
        Ok(())
    })
}

pub fn mget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let budget = ReplyBudget::new(ctx, args);
    reply::array(ctx.out, args.len() - 1);
    for k in args.iter_from(1) {
        match ctx.db.get(k) {
            Some(Value::Str(s)) => reply::bulk(ctx.out, s),
            _ => reply::null(ctx.out),
        }
        budget.check(ctx.out)?;
    }
    Ok(())
}

pub fn mset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    if args.len() % 2 == 0 {
        return Err(super::wrong_arity("mset"));
    }
    let mut i = 1;
    while i < args.len() {
        let val = args.get(i + 1);
        ctx.db.write(args.get(i), |v, exp| {
            store_str(v, val);
            *exp = 0;
        });
        i += 2;
    }
    reply::ok(ctx.out);
    Ok(())
}

fn add(ctx: &mut Ctx<'_, '_>, key: &[u8], by: i64) -> Res {
    let n = ctx.db.write(key, |v, _| {
        let cur = match v {
            None => 0,
            Some(Value::Str(s)) => parse_i64(s).ok_or(Error::from(NOT_INT))?,
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        let n = cur
            .checked_add(by)
            .ok_or(Error::from("ERR increment or decrement would overflow"))?;
        let mut buf = itoa::Buffer::new();
        store_str(v, reply::itoa(n, &mut buf));
        Ok(n)
    })?;
    reply::int(ctx.out, n);
    Ok(())
}

pub fn incr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    add(ctx, args.get(1), 1)
}

pub fn decr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    add(ctx, args.get(1), -1)
}

pub fn incrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let by = int(args.get(2))?;
    add(ctx, args.get(1), by)
}

pub fn decrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let by = int(args.get(2))?;
    let by = by
        .checked_neg()
        .ok_or(Error::from("ERR decrement would overflow"))?;
    add(ctx, args.get(1), by)
}

pub fn incrbyfloat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let by = float(args.get(2))?;
    let text = ctx.db.write(args.get(1), |v, _| {
        let cur = match v {
            None => 0.0,
            Some(Value::Str(s)) => parse_f64(s).ok_or(Error::from(NOT_FLOAT_VALUE))?,
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        let n = cur + by;
        if !n.is_finite() {
            return Err(Error::from("ERR increment would produce NaN or Infinity"));
        }
        let text = format_float_plain(n);
        store_str(v, text.as_bytes());
        Ok(text)
    })?;
    reply::bulk(ctx.out, text.as_bytes());
    Ok(())
}

const NOT_FLOAT_VALUE: &str = "ERR value is not a valid float";

pub fn append(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let tail = args.get(2);
    // The longest string APPEND and SETRANGE may make, as in Redis.
    let max = ctx.shared.config.proto_max_bulk_len;
    let len = ctx.db.write(args.get(1), |v, _| match v {
        None => {
            *v = Some(Value::Str(tail.to_vec()));
            Ok(tail.len())
        }
        Some(Value::Str(s)) => {
            if s.len() + tail.len() > max {
                return Err(Error::from(
                    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                ));
            }
            s.extend_from_slice(tail);
            Ok(s.len())
        }
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::int(ctx.out, len as i64);
    Ok(())
}

pub fn strlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = match ctx.db.get(args.get(1)) {
        None => 0,
        Some(Value::Str(s)) => s.len(),
        Some(_) => return Err(WRONGTYPE.into()),
    };
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn getrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (start, end) = (int(args.get(2))?, int(args.get(3))?);
    let s: &[u8] = match ctx.db.get(args.get(1)) {
        None => &[],
        Some(Value::Str(s)) => s,
        Some(_) => return Err(WRONGTYPE.into()),
    };
    let len = s.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        reply::bulk(ctx.out, b"");
        return Ok(());
    }
    let a = if start < 0 { start + len } else { start }.max(0);
    let b = if end < 0 { end + len } else { end }.clamp(0, len - 1);
    if a > b {
        reply::bulk(ctx.out, b"");
    } else {
        reply::bulk(ctx.out, &s[a as usize..=b as usize]);
    }
    Ok(())
}

pub fn setrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let offset = int(args.get(2))?;
    if offset < 0 {
        return Err("ERR offset is out of range".into());
    }
    let offset = offset as usize;
    let val = args.get(3);
    let max = ctx.shared.config.proto_max_bulk_len;
    let len = ctx.db.write(args.get(1), |v, _| {
        let cur_len = match v {
            None => 0,
            Some(Value::Str(s)) => s.len(),
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        if val.is_empty() {
            return Ok(cur_len);
        }
        if offset.saturating_add(val.len()) > max {
            return Err(Error::from(
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
            ));
        }
        let s = match v {
            Some(Value::Str(s)) => s,
            _ => {
                *v = Some(Value::Str(Vec::new()));
                match v {
                    Some(Value::Str(s)) => s,
                    _ => unreachable!("just stored a string"),
                }
            }
        };
        if s.len() < offset + val.len() {
            s.resize(offset + val.len(), 0);
        }
        s[offset..offset + val.len()].copy_from_slice(val);
        Ok(s.len())
    })?;
    reply::int(ctx.out, len as i64);
    Ok(())
}
