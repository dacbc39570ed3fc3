//! Dates as HTTP writes them (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) and as the
//! combined log format writes them (`06/Nov/1994:08:49:37 +0000`), in UTC, without a
//! calendar library: the proleptic Gregorian calendar from days since 1970-01-01.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Length of an IMF-fixdate.
pub(crate) const HTTP_DATE_LEN: usize = 29;

/// A UTC date and time split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: usize,
}

/// Year, month (1..=12) and day (1..=31) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar whose years start on March 1st, so the leap day ends a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        weekday: days.rem_euclid(7) as usize,
    }
}

fn two(out: &mut [u8], n: u32) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

fn four(out: &mut [u8], n: i64) {
    let n = n.clamp(0, 9999) as u32;
    two(&mut out[..2], n / 100);
    two(&mut out[2..4], n % 100);
}

/// `secs` since the epoch as an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(secs: i64) -> [u8; HTTP_DATE_LEN] {
    let c = civil(secs);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[c.weekday]);
    two(&mut out[5..7], c.day);
    out[8..11].copy_from_slice(MONTHS[c.month as usize - 1]);
    four(&mut out[12..16], c.year);
    two(&mut out[17..19], c.hour);
    two(&mut out[20..22], c.minute);
    two(&mut out[23..25], c.second);
    out
}

/// `secs` since the epoch as the combined log format writes it: `06/Nov/1994:08:49:37 +0000`.
pub(crate) fn log_date(secs: i64) -> [u8; 26] {
    let c = civil(secs);
    let mut out = *b"01/Jan/1970:00:00:00 +0000";
    two(&mut out[..2], c.day);
    out[3..6].copy_from_slice(MONTHS[c.month as usize - 1]);
    four(&mut out[7..11], c.year);
    two(&mut out[12..14], c.hour);
    two(&mut out[15..17], c.minute);
    two(&mut out[18..20], c.second);
    out
}

/// Seconds since the epoch of an HTTP-date in any of the three forms a recipient must read
/// (RFC 9110 section 5.6.7): IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete
/// RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`) and C's asctime form
/// (`Sun Nov  6 08:49:37 1994`); `None` for anything else (RFC 9110 lets a server ignore a
/// conditional header whose date it cannot read).
pub(crate) fn parse_http_date(s: &[u8]) -> Option<i64> {
    let s = s.trim_ascii();
    let num = |b: &[u8]| -> Option<u32> {
        if b.is_empty() {
            return None;
        }
        b.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let month = |b: &[u8]| {
        MONTHS
            .iter()
            .position(|m| m[..] == *b)
            .map(|i| i as u32 + 1)
    };
    // `HH:MM:SS`
    let clock = |b: &[u8]| -> Option<(u32, u32, u32)> {
        if b.len() != 8 || b[2] != b':' || b[5] != b':' {
            return None;
        }
        Some((num(&b[..2])?, num(&b[3..5])?, num(&b[6..])?))
    };
    let mut two_digit = false;
    let (year, month, day, (hour, minute, second)) =
        if let Some(comma) = s.iter().position(|&b| b == b',') {
            let (weekday, rest) = (&s[..comma], &s[comma + 1..]);
            match rest {
                // IMF-fixdate: ` 06 Nov 1994 08:49:37 GMT`
                [b' ', d @ .., b' ', b'G', b'M', b'T']
                    if weekday.len() == 3 && d.len() == 20 && d[2] == b' ' && d[6] == b' ' =>
                {
                    DAYS.iter().find(|w| w[..] == *weekday)?;
                    if d[11] != b' ' {
                        return None;
                    }
                    let year = i64::from(num(&d[7..11])?);
                    (year, month(&d[3..6])?, num(&d[..2])?, clock(&d[12..])?)
                }
                // RFC 850: ` 06-Nov-94 08:49:37 GMT`
                [b' ', d @ .., b' ', b'G', b'M', b'T']
                    if d.len() == 18 && d[2] == b'-' && d[6] == b'-' && d[9] == b' ' =>
                {
                    FULL_DAYS.iter().find(|w| w.as_bytes() == weekday)?;
                    two_digit = true;
                    let yy = i64::from(num(&d[7..9])?);
                    (yy, month(&d[3..6])?, num(&d[..2])?, clock(&d[10..])?)
                }
                _ => return None,
            }
        } else {
            // asctime: `Sun Nov  6 08:49:37 1994`, the day padded with a space.
            if s.len() != 24 || s[3] != b' ' || s[7] != b' ' || s[10] != b' ' || s[19] != b' ' {
                return None;
            }
            DAYS.iter().find(|w| w[..] == s[..3])?;
            let day = num(s[8..10].trim_ascii_start())?;
            let year = i64::from(num(&s[20..])?);
            (year, month(&s[4..7])?, day, clock(&s[11..19])?)
        };
    if day == 0 || day > 31 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let secs = |year: i64| {
        days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second)
    };
    if !two_digit {
        return Some(secs(year));
    }
    // A two-digit year is this century's, unless that is more than 50 years ahead: then
    // the century before (RFC 9110 section 5.6.7).
    let now = unix_secs(SystemTime::now());
    let this_year = civil(now).year;
    let in_this_century = this_year - this_year.rem_euclid(100) + year;
    let fifty_years = (50 * 365 + 12) * 86_400;
    Some(if secs(in_this_century) > now + fifty_years {
        secs(in_this_century - 100)
    } else {
        secs(in_this_century)
    })
}

/// Full weekday names, as RFC 850 dates write them.
const FULL_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Seconds since the epoch of a system time (negative before 1970).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The wall clock's second of a thread, as a number and a `Date` value, and the instant
/// until which it holds.
struct DateCache {
    until: Option<Instant>,
    secs: i64,
    text: [u8; HTTP_DATE_LEN],
}

thread_local! {
    /// The `Date` value of this thread, formatted at most once a second.
    static NOW: RefCell<DateCache> = const {
        RefCell::new(DateCache { until: None, secs: 0, text: [0; HTTP_DATE_LEN] })
    };
}

/// This thread's wall-clock second at `now` (a monotonic instant from
/// [`Conn::now`](crate::service::Conn::now)). The wall clock is read and formatted at most
/// once a second per thread (when `now` reaches the next whole second of the wall clock).
fn with_now<R>(now: Instant, f: impl FnOnce(&DateCache) -> R) -> R {
    NOW.with(|c| {
        let mut c = c.borrow_mut();
        if c.until.is_none_or(|until| now >= until) {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let into_second = Duration::from_nanos(u64::from(wall.subsec_nanos()));
            c.secs = wall.as_secs() as i64;
            c.text = http_date(c.secs);
            c.until = Some(now + (Duration::from_secs(1) - into_second));
        }
        f(&c)
    })
}

/// The time at `now` as an IMF-fixdate, written to `out` (see `with_now`).
pub(crate) fn write_now_http(now: Instant, out: impl FnOnce(&[u8])) {
    with_now(now, |c| out(&c.text))
}

/// The time at `now` in seconds since the epoch: the second the `Date` field says.
pub(crate) fn now_secs(now: Instant) -> i64 {
    with_now(now, |c| c.secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_now_is_the_wall_clock_second() {
        let before = unix_secs(SystemTime::now());
        let now = Instant::now();
        let mut first = Vec::new();
        write_now_http(now, |d| first = d.to_vec());
        let after = unix_secs(SystemTime::now());
        assert!(first == http_date(before) || first == http_date(after));
        // The same instant gives the same text; an instant past the second that text
        // stands for reads the wall clock again.
        let mut again = Vec::new();
        write_now_http(now, |d| again = d.to_vec());
        assert_eq!(again, first);
        let mut later = Vec::new();
        write_now_http(now + Duration::from_millis(1001), |d| later = d.to_vec());
        assert!(
            later == http_date(after) || later == http_date(after + 1),
            "{:?}",
            String::from_utf8_lossy(&later)
        );
    }

    #[test]
    fn known_dates_format() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(4_133_980_799), b"Fri, 31 Dec 2100 23:59:59 GMT");
        assert_eq!(&log_date(784_111_777), b"06/Nov/1994:08:49:37 +0000");
    }

    #[test]
    fn dates_round_trip() {
        let mut secs = -86_400 * 365;
        while secs < 5_000_000_000 {
            let text = http_date(secs);
            assert_eq!(
                parse_http_date(&text),
                Some(secs),
                "{}",
                String::from_utf8_lossy(&text)
            );
            secs += 86_400 * 13 + 3_607;
        }
    }

    #[test]
    fn the_obsolete_date_forms_are_read() {
        let want = Some(784_111_777);
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(parse_http_date(b" Sun Nov  6 08:49:37 1994 "), want);
        assert_eq!(parse_http_date(b"Thu Jan  1 00:00:00 1970"), Some(0));
        assert_eq!(
            parse_http_date(b"Tue Feb 29 00:00:00 2000"),
            Some(951_782_400)
        );
        // Two-digit years: this century unless more than 50 years ahead.
        assert_eq!(
            parse_http_date(b"Monday, 01-Jan-01 00:00:00 GMT"),
            Some(978_307_200)
        );
        let now = unix_secs(SystemTime::now());
        let in_60_years = civil(now + 60 * 365 * 86_400);
        let in_40_years = civil(now + 40 * 365 * 86_400);
        for (when, back) in [(in_60_years, 100), (in_40_years, 0)] {
            let text = format!(
                "Monday, 01-Jan-{:02} 00:00:00 GMT",
                when.year.rem_euclid(100)
            );
            let year = civil(parse_http_date(text.as_bytes()).unwrap()).year;
            assert_eq!(year, when.year - back, "{text}");
        }
    }

    #[test]
    fn other_date_forms_are_ignored() {
        for bad in [
            &b"Sun, 06 Nov 1994 08:49:37 UTC"[..],
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sunday, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06-Nov-94 08:49:37 GMT",
            b"Funday, 06-Nov-94 08:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 UTC",
            b"Sun Nov 06 08:49:37 94",
            b"Sun Nov  6 08:49 1994",
            b"Sun Nov   08:49:37 1994",
            b"Xyz Nov  6 08:49:37 1994",
            b",",
            b"",
        ] {
            assert_eq!(
                parse_http_date(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let _ = parse_http_date(&bytes);
        }

        #[test]
        fn mutated_dates_never_panic(edits in proptest::collection::vec((0usize..40, proptest::prelude::any::<u8>()), 1..4)) {
            for form in [
                &b"Sun, 06 Nov 1994 08:49:37 GMT"[..],
                b"Sunday, 06-Nov-94 08:49:37 GMT",
                b"Sun Nov  6 08:49:37 1994",
            ] {
                let mut d = form.to_vec();
                for &(at, b) in &edits {
                    let at = at % (d.len() + 1);
                    if b % 3 == 0 {
                        d.insert(at, b);
                    } else if at < d.len() {
                        d[at] = b;
                    }
                }
                let _ = parse_http_date(&d);
            }
        }

        #[test]
        fn the_three_forms_read_the_same(secs in 0i64..4_000_000_000) {
            let c = civil(secs);
            let month = std::str::from_utf8(MONTHS[c.month as usize - 1]).unwrap();
            let short = std::str::from_utf8(DAYS[c.weekday]).unwrap();
            let full = FULL_DAYS.iter().find(|d| d.starts_with(short)).unwrap();
            let clock = format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second);
            let asctime = format!("{short} {month} {:2} {clock} {}", c.day, c.year);
            proptest::prop_assert_eq!(parse_http_date(asctime.as_bytes()), Some(secs), "{}", asctime);
            let this_year = civil(unix_secs(SystemTime::now())).year;
            if (this_year - 49..=this_year + 49).contains(&c.year) {
                let rfc850 = format!("{full}, {:02}-{month}-{:02} {clock} GMT", c.day, c.year % 100);
                proptest::prop_assert_eq!(parse_http_date(rfc850.as_bytes()), Some(secs), "{}", rfc850);
            }
        }
    }
}
