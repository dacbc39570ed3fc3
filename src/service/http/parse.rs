//! Request heads (parsed by `httparse`), their size limits, the request target, and the
//! framing of request bodies (which are read and discarded).

use super::log::Line;

/// Most header fields one request may carry; more is answered like a head over the size
/// limit (431).
pub(crate) const MAX_HEADERS: usize = 64;

/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// Why a request is refused before it is served; every one closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Malformed request line, header, framing or target (400).
    BadRequest,
    /// The request line alone is over the head limit (414).
    UriTooLong,
    /// The head is over the size limit or has too many fields (431).
    HeadersTooLarge,
    /// A transfer coding other than `chunked` (501).
    NotImplemented,
    /// Not HTTP/1.x (505).
    VersionNotSupported,
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLen {
    None,
    Length(u64),
    Chunked,
}

/// What an `Expect` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    None,
    Continue,
    /// An expectation this server does not meet (417).
    Other,
}

/// A parsed request head, borrowing the input.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor: u8,
    pub(crate) keep_alive: bool,
    pub(crate) body: BodyLen,
    pub(crate) expect: Expect,
    pub(crate) if_match: Option<&'a [u8]>,
    pub(crate) if_unmodified_since: Option<&'a [u8]>,
    pub(crate) if_none_match: Option<&'a [u8]>,
    pub(crate) if_modified_since: Option<&'a [u8]>,
    pub(crate) range: Option<&'a [u8]>,
    pub(crate) if_range: Option<&'a [u8]>,
    pub(crate) referer: Option<&'a [u8]>,
    pub(crate) user_agent: Option<&'a [u8]>,
}

/// The outcome of parsing the start of a connection's input.
#[derive(Debug)]
pub(crate) enum Head<'a> {
    /// More bytes are needed.
    Partial,
    /// A request and the length of its head.
    Complete(Request<'a>, usize),
    Reject(Reject),
}

/// Parse the head at the start of `input`; `max` bounds the head's size in bytes.
pub(crate) fn parse_head(input: &[u8], max: usize) -> Head<'_> {
    // Left uninitialised: httparse writes the fields it finds (2 KiB not zeroed per request).
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(input, &mut fields) {
        Ok(httparse::Status::Partial) => {
            if input.len() > max {
                return Head::Reject(over_limit(input, max));
            }
            return Head::Partial;
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Head::Reject(Reject::HeadersTooLarge),
        Err(httparse::Error::Version) => return Head::Reject(version_error(input)),
        Err(_) => return Head::Reject(Reject::BadRequest),
    };
    if len > max {
        return Head::Reject(over_limit(input, max));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Head::Reject(Reject::BadRequest);
    };
    match fields_of(req.headers, minor) {
        Ok(f) => Head::Complete(
            Request {
                method,
                target,
                minor,
                keep_alive: f.keep_alive,
                body: f.body,
                expect: f.expect,
                if_match: f.if_match,
                if_unmodified_since: f.if_unmodified_since,
                if_none_match: f.if_none_match,
                if_modified_since: f.if_modified_since,
                range: f.range,
                if_range: f.if_range,
                referer: f.referer,
                user_agent: f.user_agent,
            },
            len,
        ),
        Err(r) => Head::Reject(r),
    }
}

/// What the access log shows of a refused head: its request line where one was read (a
/// head refused for its framing, its size, or an HTTP version not served), with Referer and
/// User-Agent where the whole head parsed.
pub(crate) fn request_line(input: &[u8]) -> Option<Line<'_>> {
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let (mut referer, mut user_agent) = (None, None);
    match req.parse_with_uninit_headers(input, &mut fields) {
        Ok(httparse::Status::Complete(_)) => {
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("referer") {
                    referer = Some(h.value);
                } else if h.name.eq_ignore_ascii_case("user-agent") {
                    user_agent = Some(h.value);
                }
            }
        }
        Err(httparse::Error::Version) => return version_line(input),
        // Partial, or refused after the request line: that line, if it was read.
        _ => {}
    }
    Some(Line {
        method: req.method?,
        target: req.path?,
        major: 1,
        minor: req.version?,
        referer,
        user_agent,
    })
}

/// A head over `max` bytes: 414 when even the request line does not end within it.
fn over_limit(input: &[u8], max: usize) -> Reject {
    // Empty lines before the request line do not count against it.
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let window = &input[start..input.len().min(start + max)];
    if window.contains(&b'\n') {
        Reject::HeadersTooLarge
    } else {
        Reject::UriTooLong
    }
}

/// httparse says "version": `HTTP/2.0` is well formed but not served (505; `HTTP/1.2` is
/// read as 1.1, see [`as_http11`]);
/// anything else in its place is malformed (400).
fn version_error(input: &[u8]) -> Reject {
    match version_line(input) {
        Some(_) => Reject::VersionNotSupported,
        None => Reject::BadRequest,
    }
}

/// A head whose request line says HTTP/1.2 to 1.9, with its version changed to 1.1 (a
/// copy of the start of `input`, as much as a head of at most `max` bytes can take): RFC
/// 9112 section 2.3 has a server answer a later minor version as the highest it speaks,
/// and httparse reads only 1.0 and 1.1. With it, the minor version the head named. `None`
/// for any other head.
pub(crate) fn as_http11(input: &[u8], max: usize) -> Option<(Vec<u8>, u8)> {
    let line = version_line(input)?;
    if line.major != 1 || line.minor < 2 {
        return None;
    }
    // The minor digit ends the version, which follows the target and a space.
    let digit = line.target.as_ptr() as usize - input.as_ptr() as usize + line.target.len() + 8;
    let window = &input[..input.len().min(max.saturating_add(1))];
    if digit >= window.len() {
        return None;
    }
    // Up to the head's end when it is in sight (not the pipelined requests after it).
    let end = (digit..window.len())
        .find_map(|i| match &window[i..] {
            [b'\n', b'\n', ..] => Some(i + 2),
            [b'\n', b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        })
        .unwrap_or(window.len());
    let mut copy = window[..end].to_vec();
    copy[digit] = b'1';
    Some((copy, line.minor))
}

/// A request line `METHOD SP target SP HTTP/d.d` (the first line that is not empty) whose
/// version httparse does not read: method, target and version for the 505 and its log.
fn version_line(input: &[u8]) -> Option<Line<'_>> {
    let line = input
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    // Visible ASCII, and the bytes of UTF-8 (as httparse takes them in a target).
    let visible = |b: &u8| (0x21..0x7f).contains(b) || *b >= 0x80;
    let well_formed = !method.is_empty()
        && method.iter().all(|&b| tchar(b))
        && !target.is_empty()
        && target.iter().all(visible)
        && version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if !well_formed {
        return None;
    }
    Some(Line {
        method: std::str::from_utf8(method).ok()?,
        target: std::str::from_utf8(target).ok()?,
        major: version[5] - b'0',
        minor: version[7] - b'0',
        referer: None,
        user_agent: None,
    })
}

#[derive(Default)]
struct Fields<'a> {
    keep_alive: bool,
    body: Option<BodyLen>,
    expect: Option<Expect>,
    if_match: Option<&'a [u8]>,
    if_unmodified_since: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
}

struct Checked<'a> {
    keep_alive: bool,
    body: BodyLen,
    expect: Expect,
    if_match: Option<&'a [u8]>,
    if_unmodified_since: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
    if_modified_since: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
}

/// The header fields that matter here, with the framing rules that keep a request from
/// being read two ways (RFC 9112 section 6).
fn fields_of<'a>(headers: &[httparse::Header<'a>], minor: u8) -> Result<Checked<'a>, Reject> {
    let mut f = Fields::default();
    let (mut close, mut keep) = (false, false);
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        let name = h.name.as_bytes();
        let value = h.value;
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // Several fields, or a list, must all carry the same number.
            for part in value.split(|&b| b == b',') {
                let n = parse_decimal(part.trim_ascii()).ok_or(Reject::BadRequest)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Reject::BadRequest);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if minor == 0 || chunked {
                return Err(Reject::BadRequest);
            }
            // Only `chunked`, alone: a request with another coding cannot be framed here.
            if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Reject::NotImplemented);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !valid_authority(value.trim_ascii()) {
                return Err(Reject::BadRequest);
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            let e = if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                Expect::Continue
            } else {
                Expect::Other
            };
            if f.expect.is_some_and(|old| old != e) {
                f.expect = Some(Expect::Other);
            } else {
                f.expect = Some(e);
            }
        } else if name.eq_ignore_ascii_case(b"if-match") {
            f.if_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-unmodified-since") {
            f.if_unmodified_since = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            f.if_none_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            f.if_modified_since = Some(value);
        } else if name.eq_ignore_ascii_case(b"range") {
            if f.range.is_some() {
                return Err(Reject::BadRequest);
            }
            f.range = Some(value);
        } else if name.eq_ignore_ascii_case(b"if-range") {
            f.if_range = Some(value);
        } else if name.eq_ignore_ascii_case(b"referer") {
            f.referer = Some(value);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            f.user_agent = Some(value);
        }
    }
    // HTTP/1.1 requires exactly one Host; no version allows two.
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(Reject::BadRequest);
    }
    if chunked && length.is_some() {
        return Err(Reject::BadRequest);
    }
    f.keep_alive = !close && (minor == 1 || keep);
    f.body = Some(match (chunked, length) {
        (true, _) => BodyLen::Chunked,
        (false, Some(0) | None) => BodyLen::None,
        (false, Some(n)) => BodyLen::Length(n),
    });
    Ok(Checked {
        keep_alive: f.keep_alive,
        body: f.body.unwrap_or(BodyLen::None),
        expect: f.expect.unwrap_or(Expect::None),
        if_match: f.if_match,
        if_unmodified_since: f.if_unmodified_since,
        if_none_match: f.if_none_match,
        if_modified_since: f.if_modified_since,
        range: f.range,
        if_range: f.if_range,
        referer: f.referer,
        user_agent: f.user_agent,
    })
}

/// A `Host` value or the authority of an absolute-form target in the characters RFC 3986
/// allows a host and port (letters, digits, `-._~%!$&'()*+,;=:[]`): no space, no user
/// information (`@`), no path (`/`), no raw UTF-8. Only the characters are checked, not
/// the structure. Empty is allowed: RFC 9112 section 3.2 sends an empty `Host` for a
/// target without an authority.
pub(crate) fn valid_authority(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

/// A non-empty run of ASCII digits that fits a `u64`.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

/// Why a request target does not name a file that may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not a target this server understands (400).
    Malformed,
    /// A path that tries to leave the root or smuggle a separator (403).
    Forbidden,
}

/// The path of a request target, undecoded, and the query (with its `?`, or empty).
/// Accepts origin form (`/a/b?q`) and absolute form (`http://host/a/b?q`).
pub(crate) fn split_target(target: &str) -> Result<(&str, &str), PathError> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let scheme_end = target.find("://").ok_or(PathError::Malformed)?;
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(PathError::Malformed);
        }
        let after = &target[scheme_end + 3..];
        let authority_end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after.as_bytes()[..authority_end];
        if authority.is_empty() || !valid_authority(authority) {
            return Err(PathError::Malformed);
        }
        match after.as_bytes().get(authority_end) {
            Some(b'/') => &after[authority_end..],
            _ => "/",
        }
    };
    let bytes = rest.as_bytes();
    let end = bytes
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(bytes.len());
    let query_end = match bytes.get(end) {
        Some(b'?') => bytes[end..]
            .iter()
            .position(|&b| b == b'#')
            .map_or(bytes.len(), |i| end + i),
        _ => end,
    };
    Ok((&rest[..end], &rest[end..query_end]))
}

fn hex(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// Decode a target's path into `out` as a path relative to the root: segments joined by
/// `/`, no leading `/`, empty and `.` segments dropped. Refused (403): `..` (however it is
/// spelled), a percent-encoded `/` or `\`, a backslash, a NUL byte, and on Windows a `:`.
/// Returns whether the path names a directory: it ends with `/` (or a last segment of `.`,
/// however it is spelled), and is not `/` itself.
pub(crate) fn decode_path(path: &str, out: &mut Vec<u8>) -> Result<bool, PathError> {
    out.clear();
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    let mut dir = false;
    for raw in path[1..].split('/') {
        let start = out.len();
        if start > 0 {
            out.push(b'/');
        }
        let seg_start = out.len();
        let raw = raw.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            let mut b = raw[i];
            if b == b'%' {
                let hi = raw.get(i + 1).copied().and_then(hex);
                let lo = raw.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::Malformed);
                };
                b = hi << 4 | lo;
                if b == b'/' {
                    return Err(PathError::Forbidden);
                }
                i += 3;
            } else {
                i += 1;
            }
            if b == b'\\' || b == 0 || (cfg!(windows) && b == b':') {
                return Err(PathError::Forbidden);
            }
            out.push(b);
        }
        dir = match &out[seg_start..] {
            b"" | b"." => {
                out.truncate(start);
                true
            }
            b".." => return Err(PathError::Forbidden),
            _ => false,
        };
    }
    Ok(bytes.len() > 1 && dir)
}

/// Progress through a body being discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyStep {
    /// All of what was shown was consumed (or what is left is an incomplete line).
    More,
    /// The body ended.
    Done,
    /// The body is longer than the limit (413).
    TooLarge,
    /// The chunked framing is broken (400).
    Malformed,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

/// A body being read and discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyReader {
    /// Bytes of content seen so far (for the limit).
    seen: u64,
    /// Bytes left of a `Content-Length` body, or the chunked decoder's place.
    state: BodyState,
    /// Trailer bytes seen (bounded like a head).
    trailer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Chunked(Chunk),
}

impl BodyReader {
    pub(crate) fn new(len: BodyLen) -> BodyReader {
        let state = match len {
            BodyLen::None => BodyState::Length(0),
            BodyLen::Length(n) => BodyState::Length(n),
            BodyLen::Chunked => BodyState::Chunked(Chunk::Size),
        };
        BodyReader {
            seen: 0,
            state,
            trailer: 0,
        }
    }

    /// Discard what `input` holds of the body; returns the bytes consumed and where the
    /// body stands. `max_body` bounds the content, `max_trailer` the trailer fields.
    pub(crate) fn advance(
        &mut self,
        input: &[u8],
        max_body: u64,
        max_trailer: usize,
    ) -> (usize, BodyStep) {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.state {
                BodyState::Length(left) => {
                    let take = (*left).min(rest.len() as u64);
                    *left -= take;
                    used += take as usize;
                    let step = if *left == 0 {
                        BodyStep::Done
                    } else {
                        BodyStep::More
                    };
                    return (used, step);
                }
                // A size line starts with a hex digit (RFC 9112 section 7.1): an empty one
                // is not the last chunk, or a request after it could pass as trailer.
                BodyState::Chunked(Chunk::Size) if rest.is_empty() => {
                    return (used, BodyStep::More)
                }
                BodyState::Chunked(Chunk::Size) if !rest[0].is_ascii_hexdigit() => {
                    return (used, BodyStep::Malformed)
                }
                BodyState::Chunked(Chunk::Size) => match chunk_size(rest) {
                    Ok(Some((n, size))) => {
                        used += n;
                        self.seen = self.seen.saturating_add(size);
                        if self.seen > max_body {
                            return (used, BodyStep::TooLarge);
                        }
                        self.state = BodyState::Chunked(if size == 0 {
                            Chunk::Trailer
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(None) if rest.len() <= MAX_CHUNK_LINE => return (used, BodyStep::More),
                    _ => return (used, BodyStep::Malformed),
                },
                BodyState::Chunked(Chunk::Data(left)) => {
                    let take = (*left).min(rest.len() as u64);
                    *left -= take;
                    used += take as usize;
                    if *left > 0 {
                        return (used, BodyStep::More);
                    }
                    self.state = BodyState::Chunked(Chunk::DataEnd);
                }
                // Chunk data ends with CRLF, as a chunk-size line does (RFC 9112 section 7.1).
                BodyState::Chunked(Chunk::DataEnd) => match rest {
                    [] | [b'\r'] => return (used, BodyStep::More),
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.state = BodyState::Chunked(Chunk::Size);
                    }
                    _ => return (used, BodyStep::Malformed),
                },
                BodyState::Chunked(Chunk::Trailer) => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if self.trailer + rest.len() > max_trailer {
                            return (used, BodyStep::Malformed);
                        }
                        return (used, BodyStep::More);
                    };
                    used += nl + 1;
                    self.trailer += nl + 1;
                    if self.trailer > max_trailer {
                        return (used, BodyStep::Malformed);
                    }
                    let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
                    if line.is_empty() {
                        self.state = BodyState::Length(0);
                        return (used, BodyStep::Done);
                    }
                    if !trailer_field(line) {
                        return (used, BodyStep::Malformed);
                    }
                }
            }
        }
    }
}

/// A token character (RFC 9110 section 5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte a field value, or a chunk extension, may hold: HTAB, SP, visible ASCII and
/// obs-text; no other control (a bare CR or LF, NUL, DEL).
fn value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// A chunk-size line (RFC 9112 section 7.1): `1*HEXDIG`, leading zeros allowed, the size
/// within 64 bits; any chunk extension of field-value bytes (its parameters are ignored,
/// as the RFC allows); CRLF. `Ok(None)`: the line has not ended yet. Returns the line's
/// length and the size.
fn chunk_size(line: &[u8]) -> Result<Option<(usize, u64)>, ()> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let significant = &line[..digits][line[..digits].iter().take_while(|&&b| b == b'0').count()..];
    if digits == 0 || significant.len() > 16 {
        return Err(());
    }
    let size = significant.iter().fold(0u64, |n, &d| {
        // A hex digit, checked above.
        n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    let rest = &line[digits..];
    let ext = rest.iter().take_while(|&&b| value_byte(b)).count();
    // What follows the digits is only spaces and tabs (BWS) or an extension.
    let ext_text = rest[..ext].trim_ascii_start();
    if !(ext_text.is_empty() || ext_text.starts_with(b";")) {
        return Err(());
    }
    match &rest[ext..] {
        [] | [b'\r'] => Ok(None),
        [b'\r', b'\n', ..] => Ok(Some((digits + ext + 2, size))),
        _ => Err(()),
    }
}

/// A trailer field line, without its line end: `name: value`, the name a token, the value
/// of field-value bytes. A line folded onto the one before (obs-fold) is refused.
fn trailer_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| tchar(b))
        && line[colon + 1..].iter().all(|&b| value_byte(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> (Request<'_>, usize) {
        match parse_head(input, 8192) {
            Head::Complete(r, n) => (r, n),
            other => panic!("not complete: {other:?}"),
        }
    }

    fn reject(input: &[u8], max: usize) -> Reject {
        match parse_head(input, max) {
            Head::Reject(r) => r,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn simple_request_parses() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\nrest";
        let (r, n) = complete(raw);
        assert_eq!(n, raw.len() - 4);
        assert_eq!((r.method, r.target, r.minor), ("GET", "/a?b", 1));
        assert!(r.keep_alive);
        assert_eq!(r.body, BodyLen::None);
        assert_eq!(r.user_agent, Some(&b"t"[..]));
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &[u8]| complete(raw).0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn framing_rules() {
        let body = |raw: &[u8]| complete(raw).0.body;
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"),
            BodyLen::Length(5)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            BodyLen::Length(5)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BodyLen::Chunked
        );
        let bad: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for raw in bad {
            assert_eq!(reject(raw, 8192), Reject::BadRequest, "{raw:?}");
        }
        assert_eq!(
            reject(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                8192
            ),
            Reject::NotImplemented
        );
    }

    #[test]
    fn limits_and_versions() {
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        assert_eq!(reject(long_line.as_bytes(), 200), Reject::UriTooLong);
        let long_head = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "a".repeat(300));
        assert_eq!(reject(long_head.as_bytes(), 200), Reject::HeadersTooLarge);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(reject(raw.as_bytes(), 1 << 20), Reject::HeadersTooLarge);
        assert_eq!(
            reject(b"GET / HTTP/2.0\r\n\r\n", 8192),
            Reject::VersionNotSupported
        );
        assert_eq!(reject(b"GET / FTP/1.1\r\n\r\n", 8192), Reject::BadRequest);
        assert_eq!(
            reject(b"GET /a b HTTP/2.0\r\n\r\n", 8192),
            Reject::BadRequest
        );
        assert_eq!(
            reject("GET /café HTTP/2.0\r\n\r\n".as_bytes(), 8192),
            Reject::VersionNotSupported
        );
        // The line logged for a version not served, as the client sent it.
        let l = request_line(b"\r\nPUT /x?y HTTP/2.0\r\nUser-Agent: u\r\n\r\n").unwrap();
        assert_eq!(
            (l.method, l.target, l.major, l.minor),
            ("PUT", "/x?y", 2, 0)
        );
        assert_eq!(l.user_agent, None);
        // A head refused for its framing: its line, Referer and User-Agent.
        let raw =
            b"POST /u HTTP/1.1\r\nHost: h\r\nReferer: r\r\nUser-Agent: a\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(reject(raw, 8192), Reject::NotImplemented);
        let l = request_line(raw).unwrap();
        assert_eq!((l.method, l.target, l.major, l.minor), ("POST", "/u", 1, 1));
        assert_eq!(
            (l.referer, l.user_agent),
            (Some(&b"r"[..]), Some(&b"a"[..]))
        );
        // Too big to read whole: the line alone.
        let l = request_line(long_head.as_bytes()).unwrap();
        assert_eq!((l.method, l.target, l.referer), ("GET", "/", None));
        assert!(request_line(&long_line.as_bytes()[..100]).is_none());
        assert_eq!(reject(b"GET  / HTTP/1.1\r\n\r\n", 8192), Reject::BadRequest);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHo", 8192),
            Head::Partial
        ));
    }

    #[test]
    fn targets_split() {
        assert_eq!(split_target("/a/b?x=1#f"), Ok(("/a/b", "?x=1")));
        assert_eq!(split_target("/"), Ok(("/", "")));
        assert_eq!(split_target("http://h:80/p?q"), Ok(("/p", "?q")));
        assert_eq!(split_target("HTTP://h"), Ok(("/", "")));
        assert_eq!(split_target("*"), Err(PathError::Malformed));
        assert_eq!(split_target("ftp://h/p"), Err(PathError::Malformed));
    }

    #[test]
    fn paths_decode_or_are_refused() {
        let mut out = Vec::new();
        let mut ok = |p: &str| {
            let slash = decode_path(p, &mut out).unwrap();
            (String::from_utf8(out.clone()).unwrap(), slash)
        };
        assert_eq!(ok("/"), (String::new(), false));
        assert_eq!(ok("/a/b.txt"), ("a/b.txt".into(), false));
        assert_eq!(ok("//a///b/./c/"), ("a/b/c".into(), true));
        assert_eq!(ok("/%61%20b"), ("a b".into(), false));
        let mut out = Vec::new();
        for p in [
            "/..",
            "/a/../b",
            "/%2e%2e/x",
            "/.%2E/x",
            "/a%2fb",
            "/a%2F..%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
        ] {
            assert_eq!(decode_path(p, &mut out), Err(PathError::Forbidden), "{p}");
        }
        assert_eq!(decode_path("/%zz", &mut out), Err(PathError::Malformed));
        assert_eq!(decode_path("/%4", &mut out), Err(PathError::Malformed));
        assert_eq!(decode_path("a", &mut out), Err(PathError::Malformed));
    }

    fn discard(raw: &[u8], max: u64) -> (usize, BodyStep) {
        BodyReader::new(BodyLen::Chunked).advance(raw, max, 1024)
    }

    #[test]
    fn chunked_bodies_are_discarded() {
        let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        assert_eq!(discard(raw, 100), (raw.len() - 4, BodyStep::Done));
        assert_eq!(discard(raw, 10).1, BodyStep::TooLarge);
        assert_eq!(discard(b"5\r\nhelloXX", 100).1, BodyStep::Malformed);
        assert_eq!(discard(b"zz\r\n", 100).1, BodyStep::Malformed);
        // Sizes: leading zeros, up to 64 bits; spaces before an extension.
        let ok = b"0000000000000000005\r\nhello\r\n0 ;a=\"b;c\"\r\n\r\n";
        assert_eq!(discard(ok, 100), (ok.len(), BodyStep::Done));
        assert_eq!(
            chunk_size(b"ffffffffffffffff\r\n"),
            Ok(Some((18, u64::MAX)))
        );
        assert_eq!(chunk_size(b"1ffffffffffffffff\r\n"), Err(()));
        assert_eq!(chunk_size(b"5;a"), Ok(None));
        assert_eq!(chunk_size(b"5\r"), Ok(None));
        // A control in an extension, a line end that is not CRLF, something else after
        // the size: malformed (a bare LF in an extension passed for part of it).
        for bad in [
            &b"5;a\nb\r\nhello\r\n0\r\n\r\n"[..],
            b"5;\nhello\r\n0\r\n\r\n",
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
            b"5;a\x7f\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 6\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(discard(bad, 100).1, BodyStep::Malformed, "{bad:?}");
        }
        // Trailer fields: a token name and a value without controls; no folding.
        let ok = b"0\r\nX-A: 1\r\nX-B:\t\xff\n\r\n";
        assert_eq!(discard(ok, 100), (ok.len(), BodyStep::Done));
        for bad in [
            &b"0\r\nX: a\rY: b\r\n\r\n"[..],
            b"0\r\nX: a\x00\r\n\r\n",
            b"0\r\nX: a\r\n folded\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX Y: z\r\n\r\n",
        ] {
            assert_eq!(discard(bad, 100).1, BodyStep::Malformed, "{bad:?}");
        }
        // Byte by byte, the decoder reaches the same end.
        let mut r = BodyReader::new(BodyLen::Chunked);
        let mut held: Vec<u8> = Vec::new();
        let mut done = None;
        for (i, &b) in raw.iter().enumerate() {
            held.push(b);
            let (n, step) = r.advance(&held, 100, 1024);
            held.drain(..n);
            if step == BodyStep::Done {
                done = Some(i + 1);
                break;
            }
            assert_eq!(step, BodyStep::More);
        }
        assert_eq!(done, Some(raw.len() - 4));
    }

    #[test]
    fn length_bodies_are_discarded() {
        let mut r = BodyReader::new(BodyLen::Length(10));
        assert_eq!(r.advance(b"12345", 100, 0), (5, BodyStep::More));
        assert_eq!(r.advance(b"67890GET", 100, 0), (5, BodyStep::Done));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const CORPUS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"HEAD /a/b.html?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /f HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nIf-None-Match: \"1-2\"\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET http://h/%2e%2e/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\nGET /v HTTP/1.2\r\nHost: t\r\nIf-Modified-Since: Sun Nov  6 08:49:37 1994\r\n\r\n",
    ];

    /// Overwrite, insert or delete bytes at arbitrary places.
    fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut v = base.to_vec();
        for &(at, byte, kind) in edits {
            let at = if v.is_empty() { 0 } else { at % (v.len() + 1) };
            match kind {
                0 if at < v.len() => v[at] = byte,
                1 => v.insert(at, byte),
                _ if at < v.len() => {
                    v.remove(at);
                }
                _ => v.push(byte),
            }
        }
        v
    }

    /// What a parsed head promises, checked on any input.
    fn check_head(input: &[u8], max: usize) {
        match parse_head(input, max) {
            Head::Complete(req, n) => {
                assert!(n <= input.len() && n <= max);
                assert!(req.minor <= 1);
                let mut out = Vec::new();
                if let Ok((path, _)) = split_target(req.target) {
                    if decode_path(path, &mut out).is_ok() {
                        check_decoded(&out);
                    }
                }
            }
            Head::Partial => assert!(input.len() <= max),
            Head::Reject(_) => {
                // The line logged for a refused head, when it has one, lies in the input.
                if let Some(l) = request_line(input) {
                    assert!(l.major <= 9 && l.minor <= 9);
                    assert!(l.method.len() + l.target.len() < input.len());
                }
            }
        }
    }

    /// A decoded path never climbs, never starts at `/`, never hides a separator or NUL.
    fn check_decoded(out: &[u8]) {
        assert!(!out.starts_with(b"/"));
        assert!(!out.contains(&0) && !out.contains(&b'\\'));
        if !out.is_empty() {
            for seg in out.split(|&b| b == b'/') {
                assert!(!seg.is_empty() && seg != b"." && seg != b"..", "{out:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500), max in 64usize..2048) {
            check_head(&bytes, max);
            if let Some((copy, _)) = as_http11(&bytes, max) {
                prop_assert!(copy.len() <= bytes.len());
                check_head(&copy, max);
            }
            let mut r = BodyReader::new(BodyLen::Chunked);
            let (n, _) = r.advance(&bytes, 1 << 20, 1024);
            prop_assert!(n <= bytes.len());
        }

        #[test]
        fn mutated_requests_never_panic(
            base in proptest::sample::select(CORPUS),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..10),
            max in 64usize..512,
        ) {
            let input = mutate(base, &edits);
            check_head(&input, max);
            if let Some((copy, _)) = as_http11(&input, max) {
                check_head(&copy, max);
            }
            // Every prefix parses as partial, complete or rejected, never anything else.
            for cut in 0..input.len() {
                check_head(&input[..cut], max);
            }
        }

        #[test]
        fn decoded_paths_stay_inside(path in "/([a-z.%25/\\\\]|%2[eEfF]|%5[cC]|%00){0,40}") {
            let mut out = Vec::new();
            if decode_path(&path, &mut out).is_ok() {
                check_decoded(&out);
            }
        }

        #[test]
        fn chunked_bodies_split_anywhere(
            sizes in proptest::collection::vec(1usize..300, 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut body = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                body.extend(std::iter::repeat_n(b'a' + i as u8, *n));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\nNEXT");
            let total = body.len() - 4;
            // Fed in pieces, with what is not consumed shown again (as the engine does).
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut r = BodyReader::new(BodyLen::Chunked);
            let (mut start, mut end_at) = (0, None);
            for cut in cuts {
                if cut <= start {
                    continue;
                }
                let (n, step) = r.advance(&body[start..cut], 1 << 20, 1024);
                start += n;
                match step {
                    BodyStep::Done => {
                        end_at = Some(start);
                        break;
                    }
                    BodyStep::More => {}
                    other => prop_assert!(false, "{other:?}"),
                }
            }
            prop_assert_eq!(end_at, Some(total));
        }
    }
}
