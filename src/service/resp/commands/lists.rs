//! List commands.

use super::{count_arg, index_range, int, Ctx, Error, Res, WRONGTYPE};
use crate::service::resp::protocol::{reply, Args};
use crate::service::resp::value::{List, Value};

/// The list at `key` for reading (`None` if absent).
fn read(v: Option<&Value>) -> Result<Option<&List>, Error> {
    match v {
        None => Ok(None),
        Some(Value::List(l)) => Ok(Some(l)),
        Some(_) => Err(WRONGTYPE.into()),
    }
}

fn push(ctx: &mut Ctx<'_, '_>, args: Args<'_>, front: bool) -> Res {
    let len = ctx.db.write(args.get(1), |v, _| {
        let l = match v {
            None => {
                *v = Some(Value::List(Box::default()));
                match v {
                    Some(Value::List(l)) => l,
                    _ => unreachable!("just stored a list"),
                }
            }
            Some(Value::List(l)) => l,
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        for item in args.iter_from(2) {
            if front {
                l.push_front(item);
            } else {
                l.push_back(item);
            }
        }
        Ok(l.len())
    })?;
    reply::int(ctx.out, len as i64);
    Ok(())
}

pub fn lpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    push(ctx, args, true)
}

pub fn rpush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    push(ctx, args, false)
}

fn pop(ctx: &mut Ctx<'_, '_>, args: Args<'_>, front: bool) -> Res {
    if args.len() > 3 {
        return Err(super::wrong_arity(if front { "lpop" } else { "rpop" }));
    }
    let count = count_arg(args, 2)?;
    let out = &mut *ctx.out;
    ctx.db.write(args.get(1), |v, _| {
        let l = match v {
            None => {
                if count.is_some() {
                    reply::null_array(out);
                } else {
                    reply::null(out);
                }
                return Ok(());
            }
            Some(Value::List(l)) => l,
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        let take = |l: &mut List| if front { l.pop_front() } else { l.pop_back() };
        match count {
            None => match take(l) {
                Some(item) => reply::bulk(out, &item),
                None => reply::null(out),
            },
            Some(n) => {
                let n = n.min(l.len());
                reply::array(out, n);
                for _ in 0..n {
                    reply::bulk(out, &take(l).unwrap_or_default());
                }
            }
        }
        Ok(())
    })
}

pub fn lpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    pop(ctx, args, true)
}

pub fn rpop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    pop(ctx, args, false)
}

pub fn llen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = read(ctx.db.get(args.get(1)))?.map_or(0, List::len);
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn lrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (start, stop) = (int(args.get(2))?, int(args.get(3))?);
    let out = &mut *ctx.out;
    match read(ctx.db.get(args.get(1)))? {
        Some(l) => match index_range(start, stop, l.len()) {
            Some((a, b)) => {
                reply::array(out, b - a);
                for item in l.range(a, b) {
                    reply::bulk(out, item);
                }
            }
            None => reply::array(out, 0),
        },
        None => reply::array(out, 0),
    }
    Ok(())
}

/// A Redis index (negative from the end) into a list of `len`, if it is inside.
fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i + len as i64 } else { i };
    (i >= 0 && (i as u64) < len as u64).then_some(i as usize)
}

pub fn lindex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let i = int(args.get(2))?;
    let out = &mut *ctx.out;
    match read(ctx.db.get(args.get(1)))?.and_then(|l| l.get(index(i, l.len())?)) {
        Some(item) => reply::bulk(out, item),
        None => reply::null(out),
    }
    Ok(())
}

pub fn lset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let i = int(args.get(2))?;
    let val = args.get(3);
    ctx.db.write(args.get(1), |v, _| match v {
        None => Err(Error::from("ERR no such key")),
        Some(Value::List(l)) => {
            let at = index(i, l.len()).ok_or(Error::from("ERR index out of range"))?;
            l.set(at, val);
            Ok(())
        }
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::ok(ctx.out);
    Ok(())
}

pub fn lrem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let count = int(args.get(2))?;
    let val = args.get(3);
    let n = ctx.db.write(args.get(1), |v, _| match v {
        None => Ok(0),
        Some(Value::List(l)) => Ok(l.remove(count, val)),
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn ltrim(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (start, stop) = (int(args.get(2))?, int(args.get(3))?);
    ctx.db.write(args.get(1), |v, _| match v {
        None => Ok(()),
        Some(Value::List(l)) => {
            match index_range(start, stop, l.len()) {
                Some((a, b)) => l.trim(a, b),
                None => l.trim(0, 0),
            }
            Ok(())
        }
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::ok(ctx.out);
    Ok(())
}
