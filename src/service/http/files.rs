//! Static files under a root directory: safe lookup, content types, validators
//! (`ETag`, `Last-Modified`), conditional requests and byte ranges.
//!
//! # Staying inside the root
//!
//! The request path is decoded and checked first ([`super::parse::decode_path`] refuses
//! `..`, encoded separators, backslashes and NUL bytes). On Linux the file is then opened
//! with `openat2(RESOLVE_BENEATH)` relative to the root's descriptor, so the kernel refuses
//! any symbolic link (or race) that would lead outside the root. Elsewhere, and on kernels
//! without `openat2`, the path is canonicalized and must stay under the canonical root.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use ringport_fallback::{classify, Disposition, Site};

use super::date;

/// What a request path leads to.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A regular file, open.
    File(OpenFile),
    /// A directory named without its trailing `/`: redirect to the name with it.
    AddSlash,
    /// A directory without `index.html`, listed (only with autoindex).
    Listing(Vec<u8>),
    NotFound,
    Forbidden,
    /// Opening failed for want of descriptors or memory: not the path's fault, and a
    /// moment later the same request may succeed.
    Unavailable,
}

/// An open regular file and what the response says about it.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) file: File,
    pub(crate) len: u64,
    /// Modification time, seconds since the epoch.
    pub(crate) mtime: i64,
    pub(crate) content_type: &'static str,
}

/// The served directory.
#[derive(Debug)]
pub(crate) struct Root {
    canonical: PathBuf,
    #[cfg(target_os = "linux")]
    dir: File,
    /// `openat2` failed with ENOSYS once: canonicalize from then on.
    #[cfg(target_os = "linux")]
    no_openat2: AtomicBool,
    autoindex: bool,
}

impl Root {
    /// Open `path` as the root.
    ///
    /// # Errors
    /// When it does not exist or is not a directory.
    pub(crate) fn open(path: &Path, autoindex: bool) -> io::Result<Root> {
        let canonical = std::fs::canonicalize(path)?;
        if !std::fs::metadata(&canonical)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", path.display()),
            ));
        }
        Ok(Root {
            #[cfg(target_os = "linux")]
            dir: File::open(&canonical)?,
            #[cfg(target_os = "linux")]
            no_openat2: AtomicBool::new(false),
            canonical,
            autoindex,
        })
    }

    /// The canonical path of the root.
    pub(crate) fn path(&self) -> &Path {
        &self.canonical
    }

    /// Find what `rel` (a decoded, checked relative path; empty for the root itself)
    /// names. `slash` says whether the request path ended with `/`.
    pub(crate) fn lookup(&self, rel: &[u8], slash: bool) -> Lookup {
        let (file, meta) = match self.open_beneath(rel) {
            Ok(found) => found,
            Err(e) => return refused(&e),
        };
        if meta.is_file {
            // `a.txt/` names a directory, which a file is not (404, as nginx answers).
            if slash {
                return Lookup::NotFound;
            }
            return Lookup::File(open_file(file, &meta, rel));
        }
        if !meta.is_dir {
            return Lookup::Forbidden;
        }
        if !slash && !rel.is_empty() {
            return Lookup::AddSlash;
        }
        // The directory's descriptor is of no more use: a listing reads it afresh, and short
        // of descriptors one counts.
        drop(file);
        let mut index = Vec::with_capacity(rel.len() + 11);
        if !rel.is_empty() {
            index.extend_from_slice(rel);
            index.push(b'/');
        }
        index.extend_from_slice(b"index.html");
        match self.open_beneath(&index) {
            Ok((f, m)) if m.is_file => Lookup::File(open_file(f, &m, &index)),
            Ok(_) => Lookup::Forbidden,
            Err(e) if self.autoindex && is_missing(&e) => self.listing(rel),
            Err(e) => refused(&e),
        }
    }

    /// Open a path under the root, refusing anything that leads outside it.
    fn open_beneath(&self, rel: &[u8]) -> io::Result<(File, Meta)> {
        #[cfg(target_os = "linux")]
        if !self.no_openat2.load(Ordering::Relaxed) {
            use rustix::fs::{Mode, OFlags, ResolveFlags};
            let path: &[u8] = if rel.is_empty() { b"." } else { rel };
            let opened = rustix::fs::openat2(
                &self.dir,
                path,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            );
            match opened {
                Ok(fd) => {
                    let file = File::from(fd);
                    let meta = Meta::of(&file)?;
                    return Ok((file, meta));
                }
                Err(e) if io::Error::from(e).kind() == io::ErrorKind::Unsupported => {
                    self.no_openat2.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let full = self.canonical.join(rel_path(rel)?);
        let real = std::fs::canonicalize(full)?;
        if !real.starts_with(&self.canonical) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let file = open_nonblocking(&real)?;
        let meta = Meta::of(&file)?;
        Ok((file, meta))
    }

    /// An HTML list of a directory's entries.
    fn listing(&self, rel: &[u8]) -> Lookup {
        let Ok(path) = rel_path(rel) else {
            return Lookup::NotFound;
        };
        let entries = match std::fs::read_dir(self.canonical.join(path)) {
            Ok(entries) => entries,
            Err(e) => return refused(&e),
        };
        // Each name as its bytes (what a link to it must carry, percent-encoded, so a name
        // that is not UTF-8 stays reachable) and whether it is a directory.
        let mut names: Vec<(Vec<u8>, bool)> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let dir = e.file_type().is_ok_and(|t| t.is_dir());
                (e.file_name().into_encoded_bytes(), dir)
            })
            .collect();
        names.sort();
        let title = String::from_utf8_lossy(rel);
        let mut page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of /{0}</title></head>\n<body><h1>Index of /{0}</h1><ul>\n",
            escape_html(&title)
        );
        if !rel.is_empty() {
            page.push_str("<li><a href=\"../\">../</a></li>\n");
        }
        for (name, dir) in names {
            let slash = if dir { "/" } else { "" };
            page.push_str(&format!(
                "<li><a href=\"{}{slash}\">{}{slash}</a></li>\n",
                escape_href(&name),
                escape_html(&String::from_utf8_lossy(&name))
            ));
        }
        page.push_str("</ul></body></html>\n");
        Lookup::Listing(page.into_bytes())
    }
}

/// What answering needs to know of an opened path.
struct Meta {
    is_file: bool,
    is_dir: bool,
    len: u64,
    /// Modification time, seconds since the epoch.
    mtime: i64,
}

impl Meta {
    /// `fstat` of the opened file on Linux (std's `metadata` is a `statx` of an empty path,
    /// several times the cost, paid once per request); elsewhere std's.
    fn of(file: &File) -> io::Result<Meta> {
        // `time_t` is narrower than i64 on some targets, hence the conversion.
        #[cfg(target_os = "linux")]
        #[allow(clippy::useless_conversion)]
        {
            use rustix::fs::FileType;
            let st = rustix::fs::fstat(file)?;
            let kind = FileType::from_raw_mode(st.st_mode);
            Ok(Meta {
                is_file: kind == FileType::RegularFile,
                is_dir: kind == FileType::Directory,
                len: u64::try_from(st.st_size).unwrap_or(0),
                mtime: i64::from(st.st_mtime),
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let m = file.metadata()?;
            Ok(Meta {
                is_file: m.is_file(),
                is_dir: m.is_dir(),
                len: m.len(),
                mtime: m.modified().map_or(0, date::unix_secs),
            })
        }
    }
}

fn open_file(file: File, meta: &Meta, rel: &[u8]) -> OpenFile {
    OpenFile {
        file,
        len: meta.len,
        mtime: meta.mtime,
        content_type: content_type(rel),
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        // A name longer than the file system allows names nothing there either.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename
    )
}

/// A failed lookup: missing (or a name no file can have) is 404, out of descriptors or
/// memory is 503, anything else (outside the root, a loop, no permission) is 403.
fn refused(e: &io::Error) -> Lookup {
    if is_missing(e) {
        Lookup::NotFound
    } else if classify(Site::Open, e) == Disposition::Exhausted {
        Lookup::Unavailable
    } else {
        Lookup::Forbidden
    }
}

#[cfg(unix)]
fn rel_path(rel: &[u8]) -> io::Result<&Path> {
    use std::os::unix::ffi::OsStrExt;
    Ok(Path::new(std::ffi::OsStr::from_bytes(rel)))
}

#[cfg(not(unix))]
fn rel_path(rel: &[u8]) -> io::Result<&Path> {
    std::str::from_utf8(rel)
        .map(Path::new)
        .map_err(|_| io::Error::from(io::ErrorKind::NotFound))
}

/// Open read-only without blocking on a FIFO or device a path might name.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    #[cfg(windows)]
    {
        // Windows opens a directory only with FILE_FLAG_BACKUP_SEMANTICS; the lookup opens
        // what a path names before it knows whether that is a file or a directory.
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
        opts.custom_flags(FILE_FLAG_BACKUP_SEMANTICS);
    }
    opts.open(path)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn escape_href(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Content types by file extension (compared without regard to case): the types a static
/// site commonly holds. Anything else is `application/octet-stream`.
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("webmanifest", "application/manifest+json"),
    ("txt", "text/plain; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("woff2", "font/woff2"),
    ("woff", "font/woff"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("pdf", "application/pdf"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("zip", "application/zip"),
];

/// The `Content-Type` for a file name, from its extension.
pub(crate) fn content_type(name: &[u8]) -> &'static str {
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let Some(dot) = base.iter().rposition(|&b| b == b'.') else {
        return "application/octet-stream";
    };
    let ext = &base[dot + 1..];
    TYPES
        .iter()
        .find(|(e, _)| ext.eq_ignore_ascii_case(e.as_bytes()))
        .map_or("application/octet-stream", |&(_, t)| t)
}

/// A file's entity tag, `"<mtime hex>-<length hex>"`, in a stack buffer.
pub(crate) struct ETag {
    buf: [u8; 36],
    len: usize,
}

impl ETag {
    pub(crate) fn new(mtime: i64, len: u64) -> ETag {
        let mut buf = [0u8; 36];
        let mut at = 0;
        let mut put = |b: u8| {
            buf[at] = b;
            at += 1;
        };
        put(b'"');
        for n in [mtime as u64, len] {
            let digits = if n == 0 {
                1
            } else {
                16 - n.leading_zeros() as usize / 4
            };
            for i in (0..digits).rev() {
                put(b"0123456789abcdef"[(n >> (i * 4)) as usize & 0xf]);
            }
            put(b'-');
        }
        buf[at - 1] = b'"';
        ETag { buf, len: at }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The entity tags of an `If-None-Match` or `If-Match` list.
fn tags(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// True when an `If-None-Match` list matches `etag` (weak comparison), or is `*`.
pub(crate) fn none_match_hits(header: &[u8], etag: &[u8]) -> bool {
    tags(header).any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag)
}

/// True when an `If-Match` list matches `etag` (strong comparison: a weak tag never
/// matches), or is `*` (the file exists).
pub(crate) fn match_hits(header: &[u8], etag: &[u8]) -> bool {
    tags(header).any(|tag| tag == b"*" || tag == etag)
}

/// True when the file changed after an `If-Unmodified-Since` date (ignored if unreadable).
pub(crate) fn modified_since(header: &[u8], mtime: i64) -> bool {
    date::parse_http_date(header).is_some_and(|since| mtime > since)
}

/// True when the file is unchanged since an `If-Modified-Since` date. The date is ignored
/// when unreadable, or later than `now` (Unix seconds): a date in the future is invalid
/// (RFC 9110, section 13.1.3).
pub(crate) fn not_modified_since(header: &[u8], mtime: i64, now: i64) -> bool {
    date::parse_http_date(header).is_some_and(|since| since <= now && mtime <= since)
}

/// True when an `If-Range` validator still holds: a strong `ETag` equal to the file's, or
/// its exact `Last-Modified` date while that date is strong, a second or more before `now`
/// (RFC 9110 sections 8.8.2.2 and 13.1.5: within the same second the file may have
/// changed again).
pub(crate) fn if_range_holds(header: &[u8], etag: &[u8], mtime: i64, now: i64) -> bool {
    let h = header.trim_ascii();
    if h.starts_with(b"\"") {
        return h == etag;
    }
    mtime < now && date::parse_http_date(h) == Some(mtime)
}

/// Most ranges one request may ask for; a `Range` header with more is ignored (the whole
/// file is sent), as RFC 9110 allows, so no request makes the server write thousands of
/// part headers.
pub(crate) const MAX_RANGES: usize = 16;

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// Serve the whole file (no usable range: absent, malformed, too many, or ranges that
    /// together ask for more than the file).
    Whole,
    /// Serve these satisfiable ranges, in the order asked.
    Parts(Box<Ranges>),
    /// 416.
    Unsatisfiable,
}

/// Up to [`MAX_RANGES`] inclusive byte ranges `(first, last)`, each within the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ranges {
    parts: [(u64, u64); MAX_RANGES],
    n: usize,
}

impl Ranges {
    pub(crate) fn as_slice(&self) -> &[(u64, u64)] {
        &self.parts[..self.n]
    }
}

/// One range spec of a `Range` header, checked for syntax only.
enum Spec {
    /// `first-last` (`last` is `u64::MAX` when absent).
    From(u64, u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

fn spec(s: &[u8]) -> Option<Spec> {
    let dash = s.iter().position(|&b| b == b'-')?;
    let (first, last) = (s[..dash].trim_ascii(), s[dash + 1..].trim_ascii());
    // Positions past 64 bits are past any file's end: they saturate (RFC 9110 section
    // 14.1.1 has any number of digits).
    let num = |d: &[u8]| {
        (!d.is_empty() && d.iter().all(u8::is_ascii_digit)).then(|| {
            d.iter().fold(0u64, |n, &b| {
                n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
            })
        })
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => num(last).map(Spec::Suffix),
        (false, true) => num(first).map(|f| Spec::From(f, u64::MAX)),
        (false, false) => {
            let (f, l) = (num(first)?, num(last)?);
            (l >= f).then_some(Spec::From(f, l))
        }
    }
}

/// Interpret a `Range` header for a file of `len` bytes (RFC 9110 section 14.2). A header
/// that is not a well-formed `bytes` range set, that has more than [`MAX_RANGES`] ranges,
/// or whose ranges add up to more than the file (overlaps), is ignored: the whole file. Of
/// the rest, ranges that start at or past the end are dropped; none left is 416.
pub(crate) fn range(header: &[u8], len: u64) -> RangeAsk {
    // The range unit is case-insensitive (RFC 9110 section 14.1).
    let header = header.trim_ascii();
    let Some(set) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .map(|_| &header[6..])
    else {
        return RangeAsk::Whole;
    };
    let mut ranges = Ranges {
        parts: [(0, 0); MAX_RANGES],
        n: 0,
    };
    let (mut asked, mut total) = (0usize, 0u64);
    // Empty list elements are allowed and skipped (RFC 9110 section 5.6.1).
    for s in set.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if s.is_empty() {
            continue;
        }
        asked += 1;
        if asked > MAX_RANGES {
            return RangeAsk::Whole;
        }
        let part = match spec(s) {
            None => return RangeAsk::Whole,
            Some(Spec::Suffix(0)) => None,
            Some(Spec::Suffix(n)) => (len > 0).then(|| (len - n.min(len), len - 1)),
            Some(Spec::From(first, last)) => (first < len).then(|| (first, last.min(len - 1))),
        };
        if let Some((first, last)) = part {
            total = total.saturating_add(last - first + 1);
            ranges.parts[ranges.n] = (first, last);
            ranges.n += 1;
        }
    }
    if asked == 0 || total > len {
        RangeAsk::Whole
    } else if ranges.n == 0 {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Parts(Box::new(ranges))
    }
}

/// Read `buf.len()` bytes of `file` from `offset`, or fewer at its end.
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[done..], offset + done as u64);
        #[cfg(windows)]
        let n =
            std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64);
        match n {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type(b"a/index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"x.woff2"), "font/woff2");
        assert_eq!(content_type(b"x.woff"), "font/woff");
        assert_eq!(content_type(b"clip.MP4"), "video/mp4");
        assert_eq!(content_type(b"feed.xml"), "application/xml");
        assert_eq!(content_type(b"x."), "application/octet-stream");
        assert_eq!(content_type(b"x.tar.gz"), "application/octet-stream");
        assert_eq!(content_type(b"dir.png/file"), "application/octet-stream");
        assert_eq!(content_type(b"noext"), "application/octet-stream");
    }

    #[test]
    fn etags_and_conditions() {
        assert_eq!(ETag::new(0x5f00, 612).as_bytes(), b"\"5f00-264\"");
        assert_eq!(ETag::new(0, 0).as_bytes(), b"\"0-0\"");
        let tag = ETag::new(-1, u64::MAX);
        assert_eq!(tag.as_bytes(), b"\"ffffffffffffffff-ffffffffffffffff\"");
        let e = b"\"1-2\"";
        assert!(none_match_hits(b"\"0-0\", W/\"1-2\"", e));
        assert!(none_match_hits(b"*", e));
        assert!(!none_match_hits(b"\"1-3\"", e));
        assert!(not_modified_since(b"Thu, 01 Jan 1970 00:00:10 GMT", 10, 20));
        assert!(!not_modified_since(
            b"Thu, 01 Jan 1970 00:00:09 GMT",
            10,
            20
        ));
        assert!(!not_modified_since(b"garbage", 10, 20));
        assert!(modified_since(b"Thu, 01 Jan 1970 00:00:09 GMT", 10));
        assert!(!modified_since(b"Thu, 01 Jan 1970 00:00:10 GMT", 10));
        assert!(!modified_since(b"garbage", 10));
        assert!(match_hits(b"\"a\", \"b\"", b"\"b\""));
        assert!(match_hits(b"*", b"\"b\""));
        assert!(!match_hits(b"W/\"b\"", b"\"b\""));
        // A date after the server's clock is ignored.
        assert!(!not_modified_since(
            b"Thu, 01 Jan 1970 00:00:30 GMT",
            10,
            20
        ));
        assert!(if_range_holds(b"\"1-2\"", e, 5, 5));
        assert!(!if_range_holds(b"W/\"1-2\"", e, 5, 9));
        assert!(if_range_holds(b"Thu, 01 Jan 1970 00:00:05 GMT", e, 5, 6));
        // A date validator of this very second is weak: it does not hold.
        assert!(!if_range_holds(b"Thu, 01 Jan 1970 00:00:05 GMT", e, 5, 5));
        assert!(!if_range_holds(b"Thu, 01 Jan 1970 00:00:04 GMT", e, 5, 9));
    }

    #[test]
    fn ranges() {
        use RangeAsk::*;
        fn parts(header: &[u8], len: u64) -> Vec<(u64, u64)> {
            match range(header, len) {
                Parts(r) => r.as_slice().to_vec(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(parts(b"bytes=0-9", 100), [(0, 9)]);
        assert_eq!(parts(b"bytes=90-", 100), [(90, 99)]);
        assert_eq!(parts(b"bytes=90-500", 100), [(90, 99)]);
        assert_eq!(parts(b"bytes=-10", 100), [(90, 99)]);
        assert_eq!(parts(b"bytes=-500", 100), [(0, 99)]);
        assert_eq!(range(b"bytes=100-", 100), Unsatisfiable);
        assert_eq!(range(b"bytes=-0", 100), Unsatisfiable);
        assert_eq!(range(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(range(b"bytes=-5", 0), Unsatisfiable);
        assert_eq!(range(b"bytes=5-1", 100), Whole);
        assert_eq!(range(b"items=0-1", 100), Whole);
        assert_eq!(range(b"bytes=x-1", 100), Whole);
        assert_eq!(range(b"bytes=", 100), Whole);
        assert_eq!(range(b"bytes=,", 100), Whole);
        // Numbers past 64 bits saturate; the unit is case-insensitive.
        assert_eq!(parts(b"bytes=0-18446744073709551616", 100), [(0, 99)]);
        assert_eq!(parts(b"bytes=0-99999999999999999999999", 100), [(0, 99)]);
        assert_eq!(range(b"bytes=99999999999999999999-", 100), Unsatisfiable);
        assert_eq!(parts(b"bytes=-99999999999999999999", 100), [(0, 99)]);
        assert_eq!(parts(b"Bytes=0-9", 100), [(0, 9)]);
        assert_eq!(parts(b"BYTES=0-9", 100), [(0, 9)]);
        // Several ranges, in the order asked; empty elements and spaces are allowed.
        assert_eq!(parts(b"bytes=0-1,5-6", 100), [(0, 1), (5, 6)]);
        assert_eq!(
            parts(b"bytes= 50-59 ,, -5,0-0", 100),
            [(50, 59), (95, 99), (0, 0)]
        );
        // Unsatisfiable ones are dropped; all of them is 416; a bad one spoils the set.
        assert_eq!(parts(b"bytes=200-300,0-1", 100), [(0, 1)]);
        assert_eq!(range(b"bytes=200-300,100-", 100), Unsatisfiable);
        assert_eq!(range(b"bytes=0-1,x", 100), Whole);
        assert_eq!(range(b"bytes=0-1,3-2", 100), Whole);
        // Overlaps that add up to more than the file, or too many ranges: the whole file.
        assert_eq!(range(b"bytes=0-60,40-99", 100), Whole);
        assert_eq!(parts(b"bytes=0-60,40-50", 100), [(0, 60), (40, 50)]);
        let many: Vec<String> = (0..=MAX_RANGES).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            range(format!("bytes={}", many.join(",")).as_bytes(), 100),
            Whole
        );
        let most = &many[..MAX_RANGES];
        let r = parts(format!("bytes={}", most.join(",")).as_bytes(), 100);
        assert_eq!(r.len(), MAX_RANGES);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any header, well formed or not, gives ranges inside the file, no more than
        /// served at once, adding up to no more than the file.
        #[test]
        fn ranges_stay_inside_the_file(
            header in "(bytes=)?[-0-9, x]{0,60}|bytes=([0-9]{0,20}-[0-9]{0,20},?){0,20}",
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            len in 0u64..2000,
        ) {
            for h in [header.as_bytes(), &raw[..]] {
                if let RangeAsk::Parts(r) = range(h, len) {
                    let parts = r.as_slice();
                    proptest::prop_assert!(!parts.is_empty() && parts.len() <= MAX_RANGES);
                    let mut total = 0;
                    for &(first, last) in parts {
                        proptest::prop_assert!(first <= last && last < len, "{parts:?} of {len}");
                        total += last - first + 1;
                    }
                    proptest::prop_assert!(total <= len);
                }
            }
        }
    }
}
