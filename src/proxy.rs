//! The PROXY protocol (versions 1 and 2), as HAProxy, nginx and cloud load balancers send
//! it: a header before the client's first byte that says who the client is.
//!
//! [`ProxyProtocol`] wraps any [`Service`]: it reads the header from a connection's first
//! input, then opens the inner service with a [`ConnInfo`] whose `peer` (and `local`) are
//! the addresses the header carries, so the service, its access log and its metrics see
//! the real client. A connection is closed, and counted in
//! `ringport_proxy_headers_total{result=...}`, when its header is missing (the peer sent
//! something else, or stopped first), malformed, longer than [`MAX_HEADER`], not complete
//! within the header timeout, or sent from an address outside the trusted sources.
//!
//! The parser ([`parse`]) is a pure function over the bytes received so far: it says
//! "need more", "done after N bytes" or "invalid", and never panics on any input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringport_fallback::event::LogLimit;

use crate::metrics::{Exposition, Kind};
use crate::service::{Conn, ConnInfo, Service};

/// Longest header accepted: the 107 bytes of a v1 line, or a v2 header with up to 1 KiB of
/// addresses and TLVs (HAProxy sends far less).
pub const MAX_HEADER: usize = 16 + 1024;
/// Default time the whole header may take to arrive.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest v1 line, CRLF included (from the specification).
const V1_MAX: usize = 107;
/// The v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Which versions a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Version {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
    /// Either, told apart by the first byte.
    Any,
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            "any" => Ok(Version::Any),
            _ => Err(format!(
                "'{s}' is not a PROXY protocol version (expected v1, v2 or any)"
            )),
        }
    }
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `Some((client, proxy-side destination))` for a proxied TCP connection; `None` for a
    /// v1 `UNKNOWN` or a v2 `LOCAL` header (a health check by the proxy itself) or an
    /// address family other than TCP over IPv4/IPv6: the connection's own addresses apply.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// Header length in bytes: the service's input starts after it.
    pub len: usize,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The input does not start like a header of an accepted version.
    Missing,
    /// It starts like one but breaks the grammar.
    Malformed,
    /// Longer than [`MAX_HEADER`] (or a v1 line over 107 bytes).
    Oversized,
}

/// The parser's answer for the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a valid header: wait for more bytes.
    Partial,
    /// A complete header.
    Done(Header),
    /// Not a valid header, whatever follows.
    Invalid(Invalid),
}

/// Parse a header of `version` at the start of `input`.
pub fn parse(input: &[u8], version: Version) -> Parsed {
    let v1 = b"PROXY ";
    let looks_v1 = starts_like(input, v1);
    let looks_v2 = starts_like(input, &V2_SIG);
    match version {
        Version::V1 if looks_v1 => parse_v1(input),
        Version::V2 if looks_v2 => parse_v2(input),
        Version::Any if looks_v1 => parse_v1(input),
        Version::Any if looks_v2 => parse_v2(input),
        _ => Parsed::Invalid(Invalid::Missing),
    }
}

/// True when `input` and `prefix` agree on their common length.
fn starts_like(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input[..n] == prefix[..n]
}

fn parse_v1(input: &[u8]) -> Parsed {
    let Some(end) = input.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if input.len() >= V1_MAX {
            Parsed::Invalid(Invalid::Oversized)
        } else {
            Parsed::Partial
        };
    };
    if end == 0 || input[end - 1] != b'\r' {
        return Parsed::Invalid(Invalid::Malformed);
    }
    let Ok(line) = std::str::from_utf8(&input[..end - 1]) else {
        return Parsed::Invalid(Invalid::Malformed);
    };
    let len = end + 1;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Done(Header {
            addresses: None,
            len,
        }),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Option<IpAddr> {
                if *family == "TCP4" {
                    s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
                }
            };
            let port = |s: &str| -> Option<u16> {
                // Decimal without sign or leading zeros (the specification's grammar).
                let ok = !s.is_empty()
                    && s.len() <= 5
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                ok.then(|| s.parse().ok()).flatten()
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(s), Some(d), Some(sp), Some(dp)) => Parsed::Done(Header {
                    addresses: Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp))),
                    len,
                }),
                _ => Parsed::Invalid(Invalid::Malformed),
            }
        }
        _ => Parsed::Invalid(Invalid::Malformed),
    }
}

fn parse_v2(input: &[u8]) -> Parsed {
    if input.len() < 16 {
        return Parsed::Partial;
    }
    let ver_cmd = input[12];
    let family = input[13];
    let body = usize::from(u16::from_be_bytes([input[14], input[15]]));
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid(Invalid::Malformed);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid(Invalid::Malformed),
    };
    let len = 16 + body;
    if len > MAX_HEADER {
        return Parsed::Invalid(Invalid::Oversized);
    }
    if input.len() < len {
        return Parsed::Partial;
    }
    let a = &input[16..len];
    let addresses = match family {
        // TCP over IPv4: 4 + 4 + 2 + 2 bytes.
        0x11 if a.len() >= 12 => {
            let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            let sp = u16::from_be_bytes([a[8], a[9]]);
            let dp = u16::from_be_bytes([a[10], a[11]]);
            Some((
                SocketAddr::new(src.into(), sp),
                SocketAddr::new(dst.into(), dp),
            ))
        }
        // TCP over IPv6: 16 + 16 + 2 + 2 bytes.
        0x21 if a.len() >= 36 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&a[..16]);
            d.copy_from_slice(&a[16..32]);
            let sp = u16::from_be_bytes([a[32], a[33]]);
            let dp = u16::from_be_bytes([a[34], a[35]]);
            Some((
                SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                SocketAddr::new(Ipv6Addr::from(d).into(), dp),
            ))
        }
        0x11 | 0x21 if !local => return Parsed::Invalid(Invalid::Malformed),
        // UNSPEC, UDP, UNIX: the connection's own addresses apply.
        _ => None,
    };
    // LOCAL: the proxy speaks for itself (health checks); its addresses are the real ones.
    Parsed::Done(Header {
        addresses: if local { None } else { addresses },
        len,
    })
}

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is in this network. An IPv4-mapped IPv6 address is compared as the
    /// IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let bad = || format!("'{s}' is not an address or network such as 10.0.0.0/8 or ::1");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Settings of [`ProxyProtocol`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Which versions are accepted.
    pub version: Version,
    /// How long the whole header may take to arrive after the connection opens.
    pub timeout: Duration,
    /// Sources allowed to send a header; empty: any. A connection from elsewhere is closed
    /// before it is read.
    pub trusted: Vec<Cidr>,
}

impl ProxyConfig {
    /// Accept `version` from any source, with [`DEFAULT_TIMEOUT`].
    pub fn new(version: Version) -> ProxyConfig {
        ProxyConfig {
            version,
            timeout: DEFAULT_TIMEOUT,
            trusted: Vec::new(),
        }
    }
}

/// Outcomes counted per header, in the order they are exposed.
const RESULTS: [&str; 6] = [
    "accepted",
    "missing",
    "malformed",
    "oversized",
    "timeout",
    "untrusted_source",
];

/// A service behind the PROXY protocol: reads the header, then runs `S` with the client's
/// address (see the [module docs](self)).
pub struct ProxyProtocol<S> {
    inner: S,
    cfg: ProxyConfig,
    counts: [AtomicU64; RESULTS.len()],
    /// Refused headers are logged at most once a second (a load balancer without
    /// `send-proxy`, or a client that bypasses it, refuses every connection).
    log: Mutex<LogLimit>,
}

impl<S: Service> ProxyProtocol<S> {
    /// Wrap `inner`.
    pub fn new(inner: S, cfg: ProxyConfig) -> ProxyProtocol<S> {
        ProxyProtocol {
            inner,
            cfg,
            counts: Default::default(),
            log: Mutex::new(LogLimit::new(Duration::from_secs(1))),
        }
    }

    /// How many headers ended with `result` (`accepted`, `missing`, `malformed`,
    /// `oversized`, `timeout`, `untrusted_source`).
    pub fn count(&self, result: &str) -> u64 {
        RESULTS
            .iter()
            .position(|r| *r == result)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    fn reject(&self, index: usize, info: &ConnInfo, conn: &mut Conn<'_>) {
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let allowed = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow();
        if let Some(suppressed) = allowed {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more refused since the last such line)")
            } else {
                String::new()
            };
            let why = match RESULTS[index] {
                "missing" => "no PROXY header",
                "malformed" => "a malformed PROXY header",
                "oversized" => "a PROXY header over its size",
                "timeout" => "no PROXY header in time",
                _ => "a PROXY header from a source not trusted",
            };
            tracing::warn!("PROXY protocol: closed {} for {why}{more}", info.peer);
        }
        conn.close();
    }
}

/// A connection's state: waiting for its header, or served by the inner service.
pub enum ProxySession<T> {
    /// The header has not arrived yet; the connection's own addresses.
    Header(ConnInfo),
    /// The inner service's session.
    Ready(T),
    /// Refused: the connection is closing.
    Refused,
}

impl<S: Service> Service for ProxyProtocol<S> {
    type Session = ProxySession<S::Session>;

    fn input_limit(&self) -> usize {
        self.inner.input_limit().max(MAX_HEADER)
    }

    fn open(&self, info: &ConnInfo, conn: &mut Conn<'_>) -> Self::Session {
        if !self.cfg.trusted.is_empty()
            && !self.cfg.trusted.iter().any(|c| c.contains(info.peer.ip()))
        {
            self.reject(5, info, conn);
            return ProxySession::Refused;
        }
        if !self.cfg.timeout.is_zero() {
            conn.set_deadline(Instant::now() + self.cfg.timeout);
        }
        ProxySession::Header(*info)
    }

    fn data(&self, session: &mut Self::Session, input: &[u8], conn: &mut Conn<'_>) -> usize {
        let info = match session {
            ProxySession::Ready(s) => return self.inner.data(s, input, conn),
            ProxySession::Refused => return input.len(),
            ProxySession::Header(info) => *info,
        };
        match parse(input, self.cfg.version) {
            Parsed::Partial => 0,
            Parsed::Invalid(why) => {
                let index = match why {
                    Invalid::Missing => 1,
                    Invalid::Malformed => 2,
                    Invalid::Oversized => 3,
                };
                self.reject(index, &info, conn);
                *session = ProxySession::Refused;
                input.len()
            }
            Parsed::Done(h) => {
                self.counts[0].fetch_add(1, Ordering::Relaxed);
                // The header phase is over: its deadline goes before the inner service
                // sets its own.
                conn.clear_deadline();
                let seen = match h.addresses {
                    Some((peer, local)) => ConnInfo::new(peer, local),
                    None => info,
                };
                *session = ProxySession::Ready(self.inner.open(&seen, conn));
                // Input after the header is shown again, to the inner service.
                h.len
            }
        }
    }

    fn eof(&self, session: &mut Self::Session, rest: &[u8], conn: &mut Conn<'_>) {
        match session {
            ProxySession::Ready(s) => self.inner.eof(s, rest, conn),
            ProxySession::Header(info) => {
                let info = *info;
                self.reject(1, &info, conn);
                *session = ProxySession::Refused;
            }
            ProxySession::Refused => conn.close(),
        }
    }

    fn input_full(&self, session: &mut Self::Session, input: &[u8], conn: &mut Conn<'_>) {
        match session {
            ProxySession::Ready(s) => self.inner.input_full(s, input, conn),
            ProxySession::Header(info) => {
                let info = *info;
                self.reject(3, &info, conn);
                *session = ProxySession::Refused;
            }
            ProxySession::Refused => {}
        }
    }

    fn drained(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        if let ProxySession::Ready(s) = session {
            self.inner.drained(s, conn);
        }
    }

    fn deadline(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        match session {
            // The inner service's own deadline.
            ProxySession::Ready(s) => self.inner.deadline(s, conn),
            ProxySession::Header(info) => {
                let info = *info;
                self.reject(4, &info, conn);
                *session = ProxySession::Refused;
            }
            ProxySession::Refused => conn.close(),
        }
    }

    fn notified(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        if let ProxySession::Ready(s) = session {
            self.inner.notified(s, conn);
        }
    }

    fn close(&self, session: Self::Session) {
        if let ProxySession::Ready(s) = session {
            self.inner.close(s);
        }
    }

    fn metrics(&self, out: &mut Exposition) {
        let name = "ringport_proxy_headers_total";
        out.family(
            name,
            Kind::Counter,
            "PROXY protocol headers, by result: accepted, or the reason the connection was closed.",
        );
        for (i, r) in RESULTS.iter().enumerate() {
            out.sample(
                name,
                &[("result", r)],
                self.counts[i].load(Ordering::Relaxed),
            );
        }
        self.inner.metrics(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(cmd: u8, family: u8, addr: &[u8], tlv: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&((addr.len() + tlv.len()) as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h.extend_from_slice(tlv);
        h
    }

    fn tcp4() -> Vec<u8> {
        v2(
            1,
            0x11,
            &[192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0x1f, 0x90],
            &[0x04, 0, 1, 0],
        )
    }

    #[test]
    fn v1_headers_parse() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 8080\r\nGET /";
        assert_eq!(
            parse(h, Version::V1),
            Parsed::Done(Header {
                addresses: Some((
                    "192.0.2.7:12345".parse().unwrap(),
                    "10.0.0.1:8080".parse().unwrap()
                )),
                len: 42,
            })
        );
        let h6 = b"PROXY TCP6 2001:db8::1 ::1 65535 80\r\n";
        match parse(h6, Version::Any) {
            Parsed::Done(h) => assert_eq!(
                h.addresses.unwrap().0,
                "[2001:db8::1]:65535".parse().unwrap()
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"PROXY UNKNOWN whatever\r\n", Version::V1),
            Parsed::Done(Header {
                addresses: None,
                len: 24
            })
        ));
        assert_eq!(parse(b"PROXY TCP4 1.2", Version::V1), Parsed::Partial);
        assert_eq!(parse(b"PRO", Version::V1), Parsed::Partial);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(
                parse(bad, Version::V1),
                Parsed::Invalid(Invalid::Malformed),
                "{bad:?}"
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(
            parse(&long, Version::V1),
            Parsed::Invalid(Invalid::Oversized)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Version::V1),
            Parsed::Invalid(Invalid::Missing)
        );
        assert_eq!(
            parse(&tcp4(), Version::V1),
            Parsed::Invalid(Invalid::Missing)
        );
    }

    #[test]
    fn v2_headers_parse() {
        let h = tcp4();
        assert_eq!(
            parse(&h, Version::V2),
            Parsed::Done(Header {
                addresses: Some((
                    "192.0.2.7:12345".parse().unwrap(),
                    "10.0.0.1:8080".parse().unwrap()
                )),
                len: 16 + 12 + 4,
            })
        );
        for cut in 0..h.len() {
            assert_eq!(
                parse(&h[..cut], Version::Any),
                Parsed::Partial,
                "cut at {cut}"
            );
        }
        let mut a6 = [0u8; 36];
        a6[15] = 1;
        a6[31] = 1;
        a6[33] = 80;
        a6[35] = 81;
        match parse(&v2(1, 0x21, &a6, &[]), Version::Any) {
            Parsed::Done(h) => assert_eq!(
                h.addresses.unwrap(),
                ("[::1]:80".parse().unwrap(), "[::1]:81".parse().unwrap())
            ),
            other => panic!("{other:?}"),
        }
        // LOCAL (health checks) and UNSPEC keep the connection's own addresses.
        assert!(matches!(
            parse(&v2(0, 0x11, &[0; 12], &[]), Version::V2),
            Parsed::Done(Header {
                addresses: None,
                ..
            })
        ));
        assert!(matches!(
            parse(&v2(1, 0x00, &[], &[]), Version::V2),
            Parsed::Done(Header {
                addresses: None,
                ..
            })
        ));
        // Too short for its family, a bad version or command.
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 4], &[]), Version::V2),
            Parsed::Invalid(Invalid::Malformed)
        );
        let mut bad = tcp4();
        bad[12] = 0x31;
        assert_eq!(
            parse(&bad, Version::V2),
            Parsed::Invalid(Invalid::Malformed)
        );
        bad[12] = 0x22;
        assert_eq!(
            parse(&bad, Version::V2),
            Parsed::Invalid(Invalid::Malformed)
        );
        let big = v2(1, 0x11, &[0; 12], &[0; 2000]);
        assert_eq!(
            parse(&big[..20], Version::V2),
            Parsed::Invalid(Invalid::Oversized)
        );
        assert_eq!(
            parse(b"PROXY TCP4 ", Version::V2),
            Parsed::Invalid(Invalid::Missing)
        );
    }

    #[test]
    fn cidrs_match_their_networks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let host: Cidr = "::1".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("::2".parse().unwrap()));
        assert_eq!(host.to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example/8".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// No byte sequence panics, and a complete header never claims more than it got.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2200)) {
            for v in [Version::V1, Version::V2, Version::Any] {
                if let Parsed::Done(h) = parse(&bytes, v) {
                    prop_assert!(h.len <= bytes.len() && h.len <= MAX_HEADER);
                }
            }
        }

        /// Inputs that start like a header, then anything: same guarantees.
        #[test]
        fn header_prefixes_then_noise(
            v1 in any::<bool>(),
            noise in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = if v1 { b"PROXY ".to_vec() } else { V2_SIG.to_vec() };
            bytes.extend_from_slice(&noise);
            if let Parsed::Done(h) = parse(&bytes, Version::Any) {
                prop_assert!(h.len <= bytes.len());
            }
        }

        /// Every valid v1 and v2 header round-trips, whatever follows it and wherever it is
        /// cut: a prefix is Partial, the whole is Done with the same addresses.
        #[test]
        fn valid_headers_round_trip(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            src6 in any::<[u8; 16]>(),
            sp in any::<u16>(), dp in any::<u16>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            six in any::<bool>(),
        ) {
            let (s, d): (IpAddr, IpAddr) = if six {
                (Ipv6Addr::from(src6).into(), Ipv6Addr::from(src6).into())
            } else {
                (Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into())
            };
            let want = (SocketAddr::new(s, sp), SocketAddr::new(d, dp));
            let text = format!("PROXY {} {} {} {sp} {dp}\r\n", if six { "TCP6" } else { "TCP4" }, s, d);
            let mut addr = Vec::new();
            for ip in [s, d] {
                match ip {
                    IpAddr::V4(a) => addr.extend_from_slice(&a.octets()),
                    IpAddr::V6(a) => addr.extend_from_slice(&a.octets()),
                }
            }
            addr.extend_from_slice(&sp.to_be_bytes());
            addr.extend_from_slice(&dp.to_be_bytes());
            let bin = v2(1, if six { 0x21 } else { 0x11 }, &addr, &[]);
            for (header, version) in [(text.into_bytes(), Version::V1), (bin, Version::V2)] {
                for cut in 0..header.len() {
                    prop_assert_eq!(parse(&header[..cut], Version::Any), Parsed::Partial);
                }
                let mut input = header.clone();
                input.extend_from_slice(&tail);
                prop_assert_eq!(
                    parse(&input, version),
                    Parsed::Done(Header { addresses: Some(want), len: header.len() })
                );
            }
        }
    }
}
