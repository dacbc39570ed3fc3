//! Numbers, sizes and durations on the command line, one way for every subcommand.
//!
//! - Counts are whole numbers.
//! - Sizes are bytes: a number, or a number with a unit `B`, `KiB`, `MiB` or `GiB`
//!   (powers of 1024; `K`, `M`, `G` for short; any case). Decimals are accepted with a unit
//!   (`1.5MiB`) as long as they come to a whole number of bytes.
//! - Durations are a number of seconds (`2`, `0.5`) or a number with a unit `ms`, `s`, `m`
//!   or `h` (`500ms`, `1.5s`, `2m`).
//!
//! A value below zero or beyond what an option takes is "out of range", with the range.
//! The parsers take their bounds; the options that may start with `-` accept hyphen values
//! so that these messages, not clap's "unexpected argument", answer `-1`.

use std::time::Duration;

/// The size units, smallest first: names as printed, the spellings accepted, the factor.
const SIZE_UNITS: [(&str, &[&str], u64); 4] = [
    ("B", &["b", ""], 1),
    ("KiB", &["kib", "k"], 1 << 10),
    ("MiB", &["mib", "m"], 1 << 20),
    ("GiB", &["gib", "g"], 1 << 30),
];

/// The duration units: the spellings accepted and nanoseconds per unit.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// What the size errors name as accepted units.
const SIZE_UNITS_TEXT: &str = "B, KiB, MiB or GiB (K, M, G for short)";
/// What the duration errors name as accepted units.
const DURATION_UNITS_TEXT: &str = "us, ms, s, m or h (a bare number is seconds)";

/// `1 KiB`, `1.5 MiB`, `64 B`: the largest unit that keeps the number at 1 or more, with one
/// decimal where it is not whole.
pub fn fmt_size(bytes: u64) -> String {
    let (name, _, factor) = SIZE_UNITS
        .iter()
        .rev()
        .find(|(_, _, f)| bytes >= *f)
        .copied()
        .unwrap_or(SIZE_UNITS[0]);
    if bytes % factor == 0 {
        format!("{} {name}", bytes / factor)
    } else {
        format!("{:.1} {name}", bytes as f64 / factor as f64)
    }
}

/// `500ms`, `2s`, `1.5s`, `10m`, `7h`, `0s`: the unit that keeps the number simplest.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 && d.subsec_nanos() % 1_000_000 == 0 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

/// The number in `s` as given, when `s` is a negative number with or without a unit.
fn is_negative(s: &str) -> bool {
    s.strip_prefix('-')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
}

/// Split `12.5MiB` into `("12.5", "mib")`.
fn split_unit(s: &str) -> (&str, String) {
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(at);
    (num, unit.trim().to_ascii_lowercase())
}

/// A whole number from `lo` to `hi`.
///
/// # Errors
/// Names the value and the range when it is not a whole number in it.
pub fn count_in(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let t = s.trim();
    let out_of_range = || format!("'{s}' is out of range: give a whole number from {lo} to {hi}");
    if is_negative(t) {
        return Err(out_of_range());
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{s}' is not a whole number (give one from {lo} to {hi})"
        ));
    }
    match t.parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(out_of_range()),
    }
}

/// A size in bytes, from `lo` to `hi`.
///
/// # Errors
/// Names the value and what is wrong: not a size, an unknown unit (naming the accepted
/// ones), not a whole number of bytes, or out of range (naming the range).
pub fn size_in(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let t = s.trim();
    let range = format!("give a size from {} to {}", fmt_size(lo), fmt_size(hi));
    if is_negative(t) {
        return Err(format!("'{s}' is out of range: {range}"));
    }
    let (num, unit) = split_unit(t);
    if num.is_empty() || num.parse::<f64>().is_err() {
        return Err(format!(
            "'{s}' is not a size like 4096, 64KiB or 1.5MiB (units: {SIZE_UNITS_TEXT})"
        ));
    }
    let Some(&(_, _, factor)) = SIZE_UNITS
        .iter()
        .find(|(_, spell, _)| spell.contains(&&*unit))
    else {
        let unit = &t[num.len()..];
        return Err(format!(
            "'{s}': unknown unit '{}' (use {SIZE_UNITS_TEXT})",
            unit.trim()
        ));
    };
    let bytes = if let Ok(whole) = num.parse::<u64>() {
        whole.checked_mul(factor)
    } else {
        // A decimal: exact when it names whole bytes (`1.5MiB`), refused when it does not.
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("'{s}' is out of range: {range}"))?
        };
        let digits = u32::try_from(frac.len()).unwrap_or(u32::MAX);
        let scale = 10u64.checked_pow(digits);
        let frac_n: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse()
                .map_err(|_| format!("'{s}' is not a size like 4096, 64KiB or 1.5MiB"))?
        };
        match scale.and_then(|sc| frac_n.checked_mul(factor).map(|p| (p, sc))) {
            Some((p, sc)) if p % sc == 0 => {
                int.checked_mul(factor).and_then(|i| i.checked_add(p / sc))
            }
            Some(_) | None => {
                return Err(format!(
                    "'{s}' is not a whole number of bytes (give bytes, or a unit it divides into)"
                ))
            }
        }
    };
    match bytes {
        Some(b) if (lo..=hi).contains(&b) => Ok(b),
        _ => Err(format!("'{s}' is out of range: {range}")),
    }
}

/// A duration from `lo` to `hi`; with `zero` a duration of zero is taken too (meaning
/// "off").
///
/// # Errors
/// Names the value and what is wrong: not a duration, an unknown unit (naming the accepted
/// ones), or out of range (naming the range).
pub fn duration_in(s: &str, lo: Duration, hi: Duration, zero: bool) -> Result<Duration, String> {
    let t = s.trim();
    let range = if zero {
        format!(
            "give 0 (off) or a duration from {} to {}",
            fmt_duration(lo),
            fmt_duration(hi)
        )
    } else {
        format!(
            "give a duration from {} to {}",
            fmt_duration(lo),
            fmt_duration(hi)
        )
    };
    if is_negative(t) {
        return Err(format!("'{s}' is out of range: {range}"));
    }
    let (num, unit) = split_unit(t);
    let n: f64 = match num.parse() {
        Ok(n) if !num.is_empty() => n,
        _ => {
            return Err(format!(
                "'{s}' is not a duration like 2, 0.5, 500ms or 2m (units: {DURATION_UNITS_TEXT})"
            ))
        }
    };
    let Some(&(_, per)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "'{s}': unknown unit '{}' (use {DURATION_UNITS_TEXT})",
            t[num.len()..].trim()
        ));
    };
    let nanos = n * per as f64;
    if !nanos.is_finite() || nanos > hi.as_nanos() as f64 {
        return Err(format!("'{s}' is out of range: {range}"));
    }
    let d = Duration::from_nanos(nanos.round() as u64);
    if (zero && d.is_zero()) || (lo..=hi).contains(&d) {
        Ok(d)
    } else {
        Err(format!("'{s}' is out of range: {range}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_whole_numbers_in_range() {
        assert_eq!(count_in("4", 1, 255), Ok(4));
        assert_eq!(count_in(" 255 ", 1, 255), Ok(255));
        for (bad, why) in [
            (
                "-1",
                "'-1' is out of range: give a whole number from 1 to 255",
            ),
            (
                "0",
                "'0' is out of range: give a whole number from 1 to 255",
            ),
            (
                "256",
                "'256' is out of range: give a whole number from 1 to 255",
            ),
            (
                "99999999999999999999999",
                "is out of range: give a whole number from 1 to 255",
            ),
            (
                "1.5",
                "'1.5' is not a whole number (give one from 1 to 255)",
            ),
            ("many", "'many' is not a whole number"),
            ("", "is not a whole number"),
        ] {
            let err = count_in(bad, 1, 255).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sizes_take_binary_units_and_whole_decimals() {
        let any = |s| size_in(s, 0, u64::MAX);
        assert_eq!(any("4096"), Ok(4096));
        assert_eq!(any("4096B"), Ok(4096));
        assert_eq!(any("64KiB"), Ok(64 << 10));
        assert_eq!(any("64 kib"), Ok(64 << 10));
        assert_eq!(any("64K"), Ok(64 << 10));
        assert_eq!(any("1MiB"), Ok(1 << 20));
        assert_eq!(any("1.5MiB"), Ok(3 << 19));
        assert_eq!(any("0.5KiB"), Ok(512));
        assert_eq!(any(".5K"), Ok(512));
        assert_eq!(any("2G"), Ok(2 << 30));
        for (bad, why) in [
            ("1.5", "'1.5' is not a whole number of bytes"),
            ("0.1KiB", "is not a whole number of bytes"),
            (
                "1MB",
                "unknown unit 'MB' (use B, KiB, MiB or GiB (K, M, G for short))",
            ),
            ("1XB", "unknown unit 'XB'"),
            ("lots", "is not a size like 4096, 64KiB or 1.5MiB"),
            ("MiB", "is not a size"),
            ("-1", "'-1' is out of range"),
            ("-1MiB", "'-1MiB' is out of range"),
            ("99999999999GiB", "is out of range"),
        ] {
            let err = any(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert_eq!(
            size_in("2MiB", 64, 1 << 20).unwrap_err(),
            "'2MiB' is out of range: give a size from 64 B to 1 MiB"
        );
    }

    #[test]
    fn durations_default_to_seconds_and_take_units() {
        let any = |s| {
            duration_in(
                s,
                Duration::from_millis(10),
                Duration::from_secs(3600),
                true,
            )
        };
        assert_eq!(any("2"), Ok(Duration::from_secs(2)));
        assert_eq!(any("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(any("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(any("20000us"), Ok(Duration::from_millis(20)));
        assert_eq!(any("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(any("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(any("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(any("0"), Ok(Duration::ZERO));
        assert_eq!(any("0s"), Ok(Duration::ZERO));
        let range = "give 0 (off) or a duration from 10ms to 1h";
        for (bad, why) in [
            ("-1s", format!("'-1s' is out of range: {range}")),
            ("-1", format!("'-1' is out of range: {range}")),
            (
                "1ns",
                "unknown unit 'ns' (use us, ms, s, m or h (a bare number is seconds))".into(),
            ),
            ("5ms", format!("'5ms' is out of range: {range}")),
            ("2h", format!("'2h' is out of range: {range}")),
            (
                "99999999999999h",
                format!("'99999999999999h' is out of range: {range}"),
            ),
            (
                "soon",
                "'soon' is not a duration like 2, 0.5, 500ms or 2m".into(),
            ),
        ] {
            let err = any(bad).unwrap_err();
            assert!(err.contains(&why), "{bad:?}: {err}");
        }
        let positive = duration_in(
            "0",
            Duration::from_millis(10),
            Duration::from_secs(60),
            false,
        );
        assert_eq!(
            positive.unwrap_err(),
            "'0' is out of range: give a duration from 10ms to 1m"
        );
    }

    #[test]
    fn sizes_and_durations_print_in_the_units_they_parse() {
        assert_eq!(fmt_size(64), "64 B");
        assert_eq!(fmt_size(1 << 10), "1 KiB");
        assert_eq!(fmt_size(3 << 19), "1.5 MiB");
        assert_eq!(fmt_size(32 << 30), "32 GiB");
        assert_eq!(fmt_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(604_800)), "168h");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
        assert_eq!(fmt_duration(Duration::ZERO), "0ms");
    }
}
