//! Set commands.

use super::{count_arg, int, Ctx, Error, ReplyBudget, Res, WRONGTYPE};
use crate::service::resp::protocol::{reply, Args};
use crate::service::resp::store::random_below;
use crate::service::resp::value::{Set, Value};

fn read(v: Option<&Value>) -> Result<Option<&Set>, Error> {
    match v {
        None => Ok(None),
        Some(Value::Set(s)) => Ok(Some(s)),
        Some(_) => Err(WRONGTYPE.into()),
    }
}

pub fn sadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = ctx.db.write(args.get(1), |v, _| {
        if v.is_none() {
            *v = Some(Value::Set(Box::default()));
        }
        match v {
            Some(Value::Set(s)) => Ok(args.iter_from(2).filter(|m| s.insert(m)).count()),
            _ => Err(Error::from(WRONGTYPE)),
        }
    })?;
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn srem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = ctx.db.write(args.get(1), |v, _| match v {
        None => Ok(0),
        Some(Value::Set(s)) => Ok(args.iter_from(2).filter(|m| s.remove(m)).count()),
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn smembers(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let out = &mut *ctx.out;
    match read(ctx.db.get(args.get(1)))? {
        Some(s) => {
            reply::array(out, s.len());
            for m in s.iter() {
                reply::bulk(out, m);
            }
        }
        None => reply::array(out, 0),
    }
    Ok(())
}

pub fn sismember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let yes = read(ctx.db.get(args.get(1)))?.is_some_and(|s| s.contains(args.get(2)));
    reply::int(ctx.out, i64::from(yes));
    Ok(())
}

pub fn scard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = read(ctx.db.get(args.get(1)))?.map_or(0, Set::len);
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn spop(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    if args.len() > 3 {
        return Err(super::SYNTAX.into());
    }
    let count = count_arg(args, 2)?;
    let out = &mut *ctx.out;
    ctx.db.write(args.get(1), |v, _| {
        let s = match v {
            None => {
                if count.is_some() {
                    reply::array(out, 0);
                } else {
                    reply::null(out);
                }
                return Ok(());
            }
            Some(Value::Set(s)) => s,
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        match count {
            None => {
                let m = s.take_at(random_below(s.len()));
                reply::bulk(out, &m);
            }
            Some(n) => {
                let n = n.min(s.len());
                reply::array(out, n);
                for _ in 0..n {
                    let m = s.take_at(random_below(s.len()));
                    reply::bulk(out, &m);
                }
            }
        }
        Ok(())
    })
}

pub fn srandmember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    if args.len() > 3 {
        return Err(super::SYNTAX.into());
    }
    let count = if args.len() == 3 {
        Some(int(args.get(2))?)
    } else {
        None
    };
    let budget = ReplyBudget::new(ctx, args);
    let out = &mut *ctx.out;
    let Some(s) = read(ctx.db.get(args.get(1)))? else {
        if count.is_some() {
            reply::array(out, 0);
        } else {
            reply::null(out);
        }
        return Ok(());
    };
    match count {
        None => reply::bulk(out, s.at(random_below(s.len()))),
        Some(n) if n >= 0 => {
            // Distinct members: a random window of positions, shuffled picks for small n.
            let n = (n as u64).min(s.len() as u64) as usize;
            let mut picked: Vec<usize> = (0..s.len()).collect();
            for i in 0..n {
                let j = i + random_below(s.len() - i);
                picked.swap(i, j);
            }
            reply::array(out, n);
            for &i in &picked[..n] {
                reply::bulk(out, s.at(i));
            }
        }
        // Counts go down to -LONG_MAX, as in Redis.
        Some(i64::MIN) => return Err("ERR value is out of range".into()),
        Some(n) => {
            // Negative: that many picks, repeats allowed; the reply budget stops a count
            // whose reply would pass the data held.
            let n = n.unsigned_abs();
            reply::array(out, usize::try_from(n).unwrap_or(usize::MAX));
            for _ in 0..n {
                reply::bulk(out, s.at(random_below(s.len())));
                budget.check(out)?;
            }
        }
    }
    Ok(())
}
