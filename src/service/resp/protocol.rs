//! RESP2 framing: requests in (multibulk and inline), replies out.
//!
//! Requests are parsed where they lie in the connection's input: a parsed frame is a list
//! of byte ranges into it. A frame that has not fully arrived leaves its progress in
//! [`Frame`], so a large request arriving in many pieces is scanned once, not once per
//! piece. Inline commands (`PING` typed into a terminal) are split into a small owned
//! buffer, with the quoting rules of redis-cli.

use std::fmt;

/// Most input held for an inline command without its newline, and for a length line of a
/// multibulk request without its CR (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX: usize = 64 * 1024;

/// Most arguments a multibulk request may announce.
const MAX_ARGS: i64 = i32::MAX as i64;

/// Why a request cannot be parsed. The connection answers `-ERR Protocol error: ...` and
/// closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// `*N` with N not a number in range.
    MultibulkLength,
    /// `$N` with N not a number, negative or over the bulk limit.
    BulkLength,
    /// An argument did not start with `$`.
    ExpectedDollar(u8),
    /// More than [`INLINE_MAX`] bytes of an inline command held without a newline.
    InlineTooBig,
    /// A `*N` line longer than [`INLINE_MAX`].
    MultibulkCountTooBig,
    /// A `$N` line longer than [`INLINE_MAX`].
    BulkCountTooBig,
    /// An inline command with an open quote.
    UnbalancedQuotes,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::MultibulkLength => f.write_str("invalid multibulk length"),
            ProtoError::BulkLength => f.write_str("invalid bulk length"),
            ProtoError::ExpectedDollar(c) => {
                write!(f, "expected '$', got '{}'", char::from(*c).escape_default())
            }
            ProtoError::InlineTooBig => f.write_str("too big inline request"),
            ProtoError::MultibulkCountTooBig => f.write_str("too big mbulk count string"),
            ProtoError::BulkCountTooBig => f.write_str("too big bulk count string"),
            ProtoError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
        }
    }
}

/// The outcome of one parse step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A whole request of `len` bytes: its arguments are in the [`Frame`]. An empty
    /// argument list (`*0`, a blank inline line) is a request to skip.
    Complete(usize),
    /// More bytes are needed; progress is kept in the [`Frame`].
    Incomplete,
    /// The input is not RESP.
    Error(ProtoError),
}

/// One request being parsed: its argument ranges and, while incomplete, how far it got.
#[derive(Debug, Default)]
pub struct Frame {
    /// Argument ranges, into the input (multibulk) or into `inline` (inline commands).
    pub args: Vec<(usize, usize)>,
    /// The arguments of an inline command, unquoted.
    pub inline: Vec<u8>,
    /// True when the arguments are in `inline`.
    pub is_inline: bool,
    /// Arguments announced by `*N` (0 before the header is parsed).
    expected: usize,
    /// Where parsing goes on, relative to the start of the request.
    pos: usize,
    /// Length of the bulk whose `$N` line was read and whose data has not all arrived.
    bulk: Option<usize>,
}

impl Frame {
    /// Forget the request just handled (keeping small buffers for the next one).
    pub fn reset(&mut self) {
        self.args.clear();
        if self.args.capacity() > 1024 {
            self.args = Vec::new();
        }
        self.inline.clear();
        if self.inline.capacity() > INLINE_MAX {
            self.inline = Vec::new();
        }
        self.is_inline = false;
        self.expected = 0;
        self.pos = 0;
        self.bulk = None;
    }

    /// The arguments of the complete request just parsed from `input`.
    pub fn view<'a>(&'a self, input: &'a [u8]) -> Args<'a> {
        Args {
            buf: if self.is_inline { &self.inline } else { input },
            ranges: &self.args,
        }
    }

    /// Parse (or go on parsing) the request at the start of `input`. `max_bulk` bounds
    /// one argument's length.
    pub fn parse(&mut self, input: &[u8], max_bulk: usize) -> Step {
        if self.expected == 0 {
            match input.first() {
                None => return Step::Incomplete,
                Some(b'*') => {}
                Some(_) => return self.parse_inline(input),
            }
            let Some(cr) = find_cr(input, 1) else {
                return if input.len() > INLINE_MAX {
                    Step::Error(ProtoError::MultibulkCountTooBig)
                } else {
                    Step::Incomplete
                };
            };
            let n = match parse_i64(&input[1..cr]) {
                Some(n) if n <= MAX_ARGS => n,
                _ => return Step::Error(ProtoError::MultibulkLength),
            };
            if n <= 0 {
                self.args.clear();
                return Step::Complete(cr + 2);
            }
            self.expected = n as usize;
            self.pos = cr + 2;
            self.args.clear();
            // Announced counts are not trusted for allocation.
            self.args.reserve(self.expected.min(64));
        }
        while self.args.len() < self.expected {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let Some(&c) = input.get(self.pos) else {
                        return Step::Incomplete;
                    };
                    if c != b'$' {
                        return Step::Error(ProtoError::ExpectedDollar(c));
                    }
                    let Some(cr) = find_cr(input, self.pos + 1) else {
                        return if input.len() - self.pos > INLINE_MAX {
                            Step::Error(ProtoError::BulkCountTooBig)
                        } else {
                            Step::Incomplete
                        };
                    };
                    let len = match parse_i64(&input[self.pos + 1..cr]) {
                        Some(n) if n >= 0 && (n as u64) <= max_bulk as u64 => n as usize,
                        _ => return Step::Error(ProtoError::BulkLength),
                    };
                    self.pos = cr + 2;
                    self.bulk = Some(len);
                    len
                }
            };
            let Some(end) = self.pos.checked_add(len) else {
                return Step::Error(ProtoError::BulkLength);
            };
            if input.len() < end.saturating_add(2) {
                return Step::Incomplete;
            }
            self.args.push((self.pos, end));
            self.pos = end + 2;
            self.bulk = None;
        }
        let used = self.pos;
        self.expected = 0;
        self.pos = 0;
        Step::Complete(used)
    }

    fn parse_inline(&mut self, input: &[u8]) -> Step {
        // As Redis: only input held without a newline is limited. A line whose newline has
        // arrived is served whatever its length (it arrived in the read that took the input
        // past the limit), so what is held for an inline command stays under the limit
        // plus one read.
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            return if input.len() > INLINE_MAX {
                Step::Error(ProtoError::InlineTooBig)
            } else {
                Step::Incomplete
            };
        };
        let line = &input[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.args.clear();
        self.inline.clear();
        if split_args(line, &mut self.inline, &mut self.args).is_err() {
            self.args.clear();
            return Step::Error(ProtoError::UnbalancedQuotes);
        }
        self.is_inline = true;
        Step::Complete(nl + 1)
    }
}

/// Index of the first `\r` at or after `from` that has a byte after it (the `\n`).
fn find_cr(input: &[u8], from: usize) -> Option<usize> {
    let tail = input.get(from..)?;
    let i = tail.iter().position(|&b| b == b'\r')? + from;
    (i + 1 < input.len()).then_some(i)
}

/// A strict decimal integer: optional `-`, no `+`, no leading zeros, no spaces, in range.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || neg) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Split an inline line into arguments, with redis-cli's quoting: `"..."` with `\n`,
/// `\r`, `\t`, `\b`, `\a`, `\\`, `\"` and `\xHH` escapes, and `'...'` with `\'`. A closing
/// quote must be followed by a space or the end of the line.
pub fn split_args(
    line: &[u8],
    buf: &mut Vec<u8>,
    args: &mut Vec<(usize, usize)>,
) -> Result<(), ProtoError> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = buf.len();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtoError::UnbalancedQuotes);
                    };
                    if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                        if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                            buf.push(h << 4 | l);
                            i += 4;
                            continue;
                        }
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        buf.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    } else if c == b'"' {
                        i += 1;
                        if i < line.len() && !is_space(line[i]) {
                            return Err(ProtoError::UnbalancedQuotes);
                        }
                        break;
                    } else {
                        buf.push(c);
                        i += 1;
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtoError::UnbalancedQuotes);
                    };
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        buf.push(b'\'');
                        i += 2;
                    } else if c == b'\'' {
                        i += 1;
                        if i < line.len() && !is_space(line[i]) {
                            return Err(ProtoError::UnbalancedQuotes);
                        }
                        break;
                    } else {
                        buf.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                while i < line.len() && !is_space(line[i]) {
                    buf.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push((start, buf.len()));
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The arguments of one request: `get(0)` is the command name.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    /// Arguments over `buf` at `ranges`.
    pub fn new(buf: &'a [u8], ranges: &'a [(usize, usize)]) -> Args<'a> {
        Args { buf, ranges }
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i` (panics past the end: callers check arity first).
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (s, e) = self.ranges[i];
        &self.buf[s..e]
    }

    /// Arguments from `from` on.
    pub fn iter_from(&self, from: usize) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.ranges[from.min(self.ranges.len())..]
            .iter()
            .map(move |&(s, e)| &buf[s..e])
    }

    /// An owned copy, for a queued transaction.
    pub fn to_owned(self) -> OwnedArgs {
        let mut buf = Vec::with_capacity(self.ranges.iter().map(|r| r.1 - r.0).sum());
        let mut ranges = Vec::with_capacity(self.ranges.len());
        for a in self.iter_from(0) {
            let s = buf.len();
            buf.extend_from_slice(a);
            ranges.push((s, buf.len()));
        }
        OwnedArgs { buf, ranges }
    }
}

/// Arguments kept past the input they were parsed from.
#[derive(Debug, Clone, Default)]
pub struct OwnedArgs {
    buf: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl OwnedArgs {
    /// Borrow as [`Args`].
    pub fn view(&self) -> Args<'_> {
        Args::new(&self.buf, &self.ranges)
    }
}

/// Writing RESP2 replies into a byte buffer.
pub mod reply {
    /// `+OK`.
    pub fn ok(out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string: `+s`.
    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.push(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// An error line: `-msg` (the message starts with its code, e.g. `ERR ...`).
    pub fn error(out: &mut Vec<u8>, msg: &str) {
        out.push(b'-');
        // An error is one line: a newline in it would desynchronise the client.
        out.extend(
            msg.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    /// An integer: `:n`.
    pub fn int(out: &mut Vec<u8>, n: i64) {
        out.push(b':');
        decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }

    /// A bulk string.
    pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        out.reserve(b.len() + 16);
        out.push(b'$');
        decimal(out, b.len() as i64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    /// An integer as a bulk string.
    pub fn bulk_int(out: &mut Vec<u8>, n: i64) {
        let mut buf = itoa::Buffer::new();
        bulk(out, itoa(n, &mut buf));
    }

    /// A float as a bulk string, formatted as [`super::format_float`] does.
    pub fn bulk_float(out: &mut Vec<u8>, f: f64) {
        bulk(out, super::format_float(f).as_bytes());
    }

    /// The null bulk string: `$-1`.
    pub fn null(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }

    /// The null array: `*-1`.
    pub fn null_array(out: &mut Vec<u8>) {
        out.extend_from_slice(b"*-1\r\n");
    }

    /// An array header: `*n`, followed by n replies.
    pub fn array(out: &mut Vec<u8>, n: usize) {
        out.push(b'*');
        decimal(out, n as i64);
        out.extend_from_slice(b"\r\n");
    }

    /// Append `n` in decimal.
    pub fn decimal(out: &mut Vec<u8>, n: i64) {
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(itoa(n, &mut buf));
    }

    /// `n` in decimal, formatted in `buf`.
    pub fn itoa(n: i64, buf: &mut itoa::Buffer) -> &[u8] {
        buf.format(n).as_bytes()
    }
}

/// A float the way Redis prints one: `inf`, `-inf`, integers without a fraction, else the
/// shortest form that reads back as the same number.
pub fn format_float(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == f.trunc() && f.abs() < 1e17 {
        return format!("{}", f as i64);
    }
    let s = format!("{f}");
    if s.len() > 24 {
        format!("{f:e}")
    } else {
        s
    }
}

/// A float as Redis writes an INCRBYFLOAT result: plain decimal, never an exponent (the
/// shortest digits that read back as `f`, padded with zeros).
pub fn format_float_plain(f: f64) -> String {
    if f == 0.0 {
        "0".into()
    } else {
        format!("{f}")
    }
}

/// A float argument: decimal or exponent notation, `inf`, `+inf`, `-inf`; never NaN.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    // Redis reads floats of up to 5 KiB (`MAX_LONG_DOUBLE_CHARS`): an INCRBYFLOAT result
    // in plain decimal is up to 309 digits before the point, and more after it.
    if t.is_empty() || t.len() > 5 * 1024 || t.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    let v: f64 = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ if lower.contains("inf") || lower.contains("nan") => return None,
        // A number too big for a double (1e400) is not read as infinity: Redis refuses it.
        _ => t.parse().ok().filter(|v: &f64| v.is_finite())?,
    };
    if v.is_nan() {
        return None;
    }
    // -0 and 0 are one score.
    Some(if v == 0.0 { 0.0 } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtoError> {
        let mut f = Frame::default();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match f.parse(&input[at..], 1 << 20) {
                Step::Complete(n) => {
                    let args = f.view(&input[at..]);
                    out.push(args.iter_from(0).map(<[u8]>::to_vec).collect());
                    f.reset();
                    at += n;
                }
                Step::Incomplete => return Ok(out),
                Step::Error(e) => return Err(e),
            }
        }
    }

    #[test]
    fn multibulk_and_inline() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*0\r\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![]
            ]
        );
        let got = parse_all(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\r\n").unwrap();
        assert_eq!(
            got,
            vec![vec![
                b"set".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"A\n".to_vec()
            ]]
        );
    }

    #[test]
    fn errors_are_worded_like_redis() {
        assert_eq!(parse_all(b"*x\r\n"), Err(ProtoError::MultibulkLength));
        assert_eq!(parse_all(b"*1\r\n$-5\r\n"), Err(ProtoError::BulkLength));
        assert_eq!(
            parse_all(b"*1\r\n:5\r\n"),
            Err(ProtoError::ExpectedDollar(b':'))
        );
        assert_eq!(
            parse_all(b"GET \"abc\r\n"),
            Err(ProtoError::UnbalancedQuotes)
        );
        assert_eq!(
            ProtoError::ExpectedDollar(b'x').to_string(),
            "expected '$', got 'x'"
        );
        let mut f = Frame::default();
        assert_eq!(
            f.parse(b"*1\r\n$11\r\n", 10),
            Step::Error(ProtoError::BulkLength)
        );
        let long = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(parse_all(&long), Err(ProtoError::InlineTooBig));
    }

    #[test]
    fn inline_limit_counts_only_input_without_its_newline() {
        // Held without a newline: up to the limit it waits for more, past it is an error.
        let mut f = Frame::default();
        assert_eq!(f.parse(&vec![b'a'; INLINE_MAX], 1 << 20), Step::Incomplete);
        assert_eq!(
            f.parse(&vec![b'a'; INLINE_MAX + 1], 1 << 20),
            Step::Error(ProtoError::InlineTooBig)
        );
        // A line over the limit whose newline has arrived is served, as redis-server serves a
        // 70 KB line (read 16 KiB at a time, its newline comes in the read past the limit).
        let value = vec![b'a'; 70 * 1024];
        let mut wire = b"ECHO ".to_vec();
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\nPING\r\n");
        assert_eq!(
            parse_all(&wire),
            Ok(vec![vec![b"ECHO".to_vec(), value], vec![b"PING".to_vec()]])
        );
    }

    #[test]
    fn resumes_a_split_request() {
        let req = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for cut in 0..req.len() {
            let mut f = Frame::default();
            let first = f.parse(&req[..cut], 1 << 20);
            assert_eq!(first, Step::Incomplete, "cut {cut}");
            assert_eq!(f.parse(req, 1 << 20), Step::Complete(req.len()));
            let args = f.view(req);
            assert_eq!(args.get(2), b"value");
        }
    }

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1a",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(f64::INFINITY), "inf");
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(parse_f64(b"1e400"), None);
        assert_eq!(parse_f64(b"-1e400"), None);
    }
}
