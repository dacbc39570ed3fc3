//! Hash commands.

use super::{int, Ctx, Error, ReplyBudget, Res, WRONGTYPE};
use crate::service::resp::protocol::{parse_i64, reply, Args};
use crate::service::resp::value::{Hash, Value};

fn read(v: Option<&Value>) -> Result<Option<&Hash>, Error> {
    match v {
        None => Ok(None),
        Some(Value::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(WRONGTYPE.into()),
    }
}

/// The hash in `v`, created if absent.
fn hash_mut(v: &mut Option<Value>) -> Result<&mut Hash, Error> {
    if v.is_none() {
        *v = Some(Value::Hash(Box::default()));
    }
    match v {
        Some(Value::Hash(h)) => Ok(h),
        _ => Err(WRONGTYPE.into()),
    }
}

fn set_pairs(ctx: &mut Ctx<'_, '_>, args: Args<'_>, name: &str) -> Result<usize, Error> {
    if args.len() % 2 != 0 {
        return Err(super::wrong_arity(name));
    }
    ctx.db.write(args.get(1), |v, _| {
        let h = hash_mut(v)?;
        let mut added = 0;
        let mut i = 2;
        while i < args.len() {
            added += usize::from(h.set(args.get(i), args.get(i + 1)));
            i += 2;
        }
        Ok(added)
    })
}

pub fn hset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = set_pairs(ctx, args, "hset")?;
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn hmset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    set_pairs(ctx, args, "hmset")?;
    reply::ok(ctx.out);
    Ok(())
}

pub fn hsetnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (field, val) = (args.get(2), args.get(3));
    let set = ctx.db.write(args.get(1), |v, _| {
        let h = hash_mut(v)?;
        if h.get(field).is_some() {
            return Ok(false);
        }
        h.set(field, val);
        Ok::<_, Error>(true)
    })?;
    reply::int(ctx.out, i64::from(set));
    Ok(())
}

pub fn hget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let out = &mut *ctx.out;
    match read(ctx.db.get(args.get(1)))?.and_then(|h| h.get(args.get(2))) {
        Some(v) => reply::bulk(out, v),
        None => reply::null(out),
    }
    Ok(())
}

pub fn hmget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let budget = ReplyBudget::new(ctx, args);
    let out = &mut *ctx.out;
    let h = read(ctx.db.get(args.get(1)))?;
    reply::array(out, args.len() - 2);
    for f in args.iter_from(2) {
        match h.and_then(|h| h.get(f)) {
            Some(v) => reply::bulk(out, v),
            None => reply::null(out),
        }
        budget.check(out)?;
    }
    Ok(())
}

pub fn hdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = ctx.db.write(args.get(1), |v, _| match v {
        None => Ok(0),
        Some(Value::Hash(h)) => Ok(args.iter_from(2).filter(|f| h.remove(f)).count()),
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn hgetall(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let out = &mut *ctx.out;
    match read(ctx.db.get(args.get(1)))? {
        Some(h) => {
            reply::array(out, h.len() * 2);
            for (f, v) in h.iter() {
                reply::bulk(out, f);
                reply::bulk(out, v);
            }
        }
        None => reply::array(out, 0),
    }
    Ok(())
}

pub fn hlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = read(ctx.db.get(args.get(1)))?.map_or(0, Hash::len);
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn hexists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let yes = read(ctx.db.get(args.get(1)))?.is_some_and(|h| h.get(args.get(2)).is_some());
    reply::int(ctx.out, i64::from(yes));
    Ok(())
}

pub fn hincrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let by = int(args.get(3))?;
    let field = args.get(2);
    let n = ctx.db.write(args.get(1), |v, _| {
        let h = hash_mut(v)?;
        let cur = match h.get(field) {
            None => 0,
            Some(s) => parse_i64(s).ok_or(Error::from("ERR hash value is not an integer"))?,
        };
        let n = cur
            .checked_add(by)
            .ok_or(Error::from("ERR increment or decrement would overflow"))?;
        let mut buf = itoa::Buffer::new();
        h.set(field, reply::itoa(n, &mut buf));
        Ok::<_, Error>(n)
    })?;
    reply::int(ctx.out, n);
    Ok(())
}

fn list(ctx: &mut Ctx<'_, '_>, args: Args<'_>, keys: bool) -> Res {
    let out = &mut *ctx.out;
    match read(ctx.db.get(args.get(1)))? {
        Some(h) => {
            reply::array(out, h.len());
            for (f, v) in h.iter() {
                reply::bulk(out, if keys { f } else { v });
            }
        }
        None => reply::array(out, 0),
    }
    Ok(())
}

pub fn hkeys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    list(ctx, args, true)
}

pub fn hvals(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    list(ctx, args, false)
}
