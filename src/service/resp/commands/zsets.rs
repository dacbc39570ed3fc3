//! Sorted-set commands.

use super::{count_arg, float, index_range, int, is, Ctx, Error, Res, SYNTAX, WRONGTYPE};
use crate::service::resp::protocol::{parse_f64, reply, Args};
use crate::service::resp::value::{Value, ZSet};

const NAN_SCORE: &str = "ERR resulting score is not a number (NaN)";

fn read(v: Option<&Value>) -> Result<Option<&ZSet>, Error> {
    match v {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z)),
        Some(_) => Err(WRONGTYPE.into()),
    }
}

fn zset_mut(v: &mut Option<Value>) -> Result<&mut ZSet, Error> {
    if v.is_none() {
        *v = Some(Value::ZSet(Box::default()));
    }
    match v {
        Some(Value::ZSet(z)) => Ok(z),
        _ => Err(WRONGTYPE.into()),
    }
}

/// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]
pub fn zadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        match () {
            () if is(a, "nx") => nx = true,
            () if is(a, "xx") => xx = true,
            () if is(a, "gt") => gt = true,
            () if is(a, "lt") => lt = true,
            () if is(a, "ch") => ch = true,
            () if is(a, "incr") => incr = true,
            () => break,
        }
        i += 1;
    }
    let rest = args.len() - i;
    if rest == 0 || rest % 2 != 0 {
        return Err(SYNTAX.into());
    }
    if nx && xx {
        return Err("ERR XX and NX options at the same time are not compatible".into());
    }
    if (gt && lt) || (nx && (gt || lt)) {
        return Err("ERR GT, LT, and/or NX options at the same time are not compatible".into());
    }
    if incr && rest > 2 {
        return Err("ERR INCR option supports a single increment-element pair".into());
    }
    let mut pairs = Vec::with_capacity(rest / 2);
    while i < args.len() {
        pairs.push((float(args.get(i))?, args.get(i + 1)));
        i += 2;
    }
    let (added, changed, last) = ctx.db.write(args.get(1), |v, _| {
        let z = zset_mut(v)?;
        let (mut added, mut changed, mut last) = (0, 0, None);
        for &(score, m) in &pairs {
            last = None;
            match z.score(m) {
                Some(cur) => {
                    if nx {
                        continue;
                    }
                    let new = if incr { cur + score } else { score };
                    if new.is_nan() {
                        return Err(Error::from(NAN_SCORE));
                    }
                    if (gt && new <= cur) || (lt && new >= cur) {
                        continue;
                    }
                    if new != cur {
                        z.insert(m, new);
                        changed += 1;
                    }
                    last = Some(new);
                }
                None => {
                    if xx {
                        continue;
                    }
                    z.insert(m, score);
                    added += 1;
                    last = Some(score);
                }
            }
        }
        Ok((added, changed, last))
    })?;
    if incr {
        match last {
            Some(s) => reply::bulk_float(ctx.out, s),
            None => reply::null(ctx.out),
        }
    } else {
        reply::int(ctx.out, if ch { added + changed } else { added });
    }
    Ok(())
}

pub fn zrem(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = ctx.db.write(args.get(1), |v, _| match v {
        None => Ok(0),
        Some(Value::ZSet(z)) => Ok(args.iter_from(2).filter(|m| z.remove(m)).count()),
        Some(_) => Err(Error::from(WRONGTYPE)),
    })?;
    reply::int(ctx.out, n as i64);
    Ok(())
}

pub fn zscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    match read(ctx.db.get(args.get(1)))?.and_then(|z| z.score(args.get(2))) {
        Some(s) => reply::bulk_float(ctx.out, s),
        None => reply::null(ctx.out),
    }
    Ok(())
}

pub fn zincrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let by = float(args.get(2))?;
    let m = args.get(3);
    let new = ctx.db.write(args.get(1), |v, _| {
        let z = zset_mut(v)?;
        let new = z.score(m).unwrap_or(0.0) + by;
        if new.is_nan() {
            return Err(Error::from(NAN_SCORE));
        }
        z.insert(m, new);
        Ok(new)
    })?;
    reply::bulk_float(ctx.out, new);
    Ok(())
}

pub fn zcard(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let n = read(ctx.db.get(args.get(1)))?.map_or(0, ZSet::len);
    reply::int(ctx.out, n as i64);
    Ok(())
}

/// A score bound: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
fn bound(a: &[u8]) -> Result<(f64, bool), Error> {
    let bad = || Error::from("ERR min or max is not a float");
    match a.strip_prefix(b"(") {
        Some(rest) => Ok((parse_f64(rest).ok_or_else(bad)?, true)),
        None => Ok((parse_f64(a).ok_or_else(bad)?, false)),
    }
}

/// What a range asks for.
struct Range {
    by_score: bool,
    rev: bool,
    with_scores: bool,
    limit: Option<(i64, i64)>,
}

fn write_members<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = (&'a [u8], f64)>,
    with_scores: bool,
) {
    let items: Vec<(&[u8], f64)> = items.collect();
    reply::array(out, items.len() * if with_scores { 2 } else { 1 });
    for (m, s) in items {
        reply::bulk(out, m);
        if with_scores {
            reply::bulk_float(out, s);
        }
    }
}

fn range(ctx: &mut Ctx<'_, '_>, args: Args<'_>, r: &Range) -> Res {
    let (a, b) = (args.get(2), args.get(3));
    let out = &mut *ctx.out;
    if r.by_score {
        // With REV the first bound is the maximum.
        let (lo, hi) = if r.rev { (b, a) } else { (a, b) };
        let ((lo, lo_ex), (hi, hi_ex)) = (bound(lo)?, bound(hi)?);
        let (offset, count) = r.limit.unwrap_or((0, -1));
        let Some(z) = read(ctx.db.get(args.get(1)))? else {
            reply::array(out, 0);
            return Ok(());
        };
        if offset < 0 {
            reply::array(out, 0);
            return Ok(());
        }
        let take = if count < 0 {
            usize::MAX
        } else {
            count as usize
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        if r.rev {
            let all: Vec<(&[u8], f64)> = z.by_score(lo, lo_ex, hi, hi_ex).collect();
            write_members(
                out,
                all.into_iter().rev().skip(skip).take(take),
                r.with_scores,
            );
        } else {
            write_members(
                out,
                z.by_score(lo, lo_ex, hi, hi_ex).skip(skip).take(take),
                r.with_scores,
            );
        }
        return Ok(());
    }
    let (start, stop) = (int(a)?, int(b)?);
    let Some(z) = read(ctx.db.get(args.get(1)))? else {
        reply::array(out, 0);
        return Ok(());
    };
    match index_range(start, stop, z.len()) {
        None => reply::array(out, 0),
        Some((s, e)) if r.rev => {
            write_members(out, z.iter().rev().skip(s).take(e - s), r.with_scores)
        }
        Some((s, e)) => write_members(out, z.iter().skip(s).take(e - s), r.with_scores),
    }
    Ok(())
}

/// Options after the bounds: WITHSCORES, LIMIT, and (for ZRANGE) BYSCORE, REV.
fn options(args: Args<'_>, full: bool, by_score: bool, rev: bool) -> Result<Range, Error> {
    let mut r = Range {
        by_score,
        rev,
        with_scores: false,
        limit: None,
    };
    let mut i = 4;
    while i < args.len() {
        let a = args.get(i);
        if is(a, "withscores") {
            r.with_scores = true;
        } else if is(a, "limit") && i + 2 < args.len() {
            r.limit = Some((int(args.get(i + 1))?, int(args.get(i + 2))?));
            i += 2;
        } else if full && is(a, "byscore") {
            r.by_score = true;
        } else if full && is(a, "rev") {
            r.rev = true;
        } else if full && is(a, "bylex") {
            return Err("ERR BYLEX is not supported by this server".into());
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    if r.limit.is_some() && !r.by_score {
        return Err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
                .into(),
        );
    }
    Ok(r)
}

pub fn zrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let r = options(args, true, false, false)?;
    range(ctx, args, &r)
}

pub fn zrevrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let r = options(args, false, false, true)?;
    range(ctx, args, &r)
}

pub fn zrangebyscore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    let r = options(args, false, true, false)?;
    range(ctx, args, &r)
}

fn rank(ctx: &mut Ctx<'_, '_>, args: Args<'_>, rev: bool) -> Res {
    let out = &mut *ctx.out;
    let z = read(ctx.db.get(args.get(1)))?;
    match z.and_then(|z| Some((z.rank(args.get(2))?, z.len()))) {
        Some((r, len)) => reply::int(out, if rev { len - 1 - r } else { r } as i64),
        None => reply::null(out),
    }
    Ok(())
}

pub fn zrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    rank(ctx, args, false)
}

pub fn zrevrank(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    rank(ctx, args, true)
}

fn pop(ctx: &mut Ctx<'_, '_>, args: Args<'_>, max: bool) -> Res {
    if args.len() > 3 {
        return Err(SYNTAX.into());
    }
    let count = count_arg(args, 2)?.unwrap_or(1);
    let out = &mut *ctx.out;
    ctx.db.write(args.get(1), |v, _| {
        let z = match v {
            None => {
                reply::array(out, 0);
                return Ok(());
            }
            Some(Value::ZSet(z)) => z,
            Some(_) => return Err(Error::from(WRONGTYPE)),
        };
        let n = count.min(z.len());
        reply::array(out, n * 2);
        for _ in 0..n {
            if let Some((m, s)) = z.pop(max) {
                reply::bulk(out, &m);
                reply::bulk_float(out, s);
            }
        }
        Ok(())
    })
}

pub fn zpopmin(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    pop(ctx, args, false)
}

pub fn zpopmax(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Res {
    pop(ctx, args, true)
}
