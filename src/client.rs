//! A tiny blocking HTTP/1.1 client for loopback calls on the hot paths (the launcher and
//! `cco hook` run on every launch and tool call): no async runtime, one connection per call.
//! [`SidecarClient`] and [`DaemonClient`] are the typed clients built on it.

pub mod sidecar;

pub use sidecar::{DaemonClient, ServiceError, SidecarClient, StreamItem, StreamQuery};

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response body read into memory.
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Protocol(format!("bad JSON: {e}")))
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection refused")]
    Refused,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(io::Error),
    #[error("bad HTTP response: {0}")]
    Protocol(String),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ClientError::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::Timeout,
            _ => ClientError::Io(e),
        }
    }
}

/// One request. `headers` must not contain `Host`, `Content-Length` or `Connection`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Self {
        Request {
            method: "GET",
            path,
            headers: &[],
            body: None,
        }
    }
}

/// The uid owning the socket that accepts connections to 127.0.0.1:`port`, from
/// `/proc/net/tcp` (127.0.0.1 or 0.0.0.0) and then `/proc/net/tcp6` (`::`, which is
/// dual-stack by default, `::ffff:127.0.0.1` or `::1`); `None` where that cannot be told
/// (no such listener, not Linux).
pub fn listener_uid(port: u16) -> Option<u32> {
    // The kernel lists listening sockets first and builds the file as it is read: stopping
    // at the first non-listening line costs ~0.1 ms, where reading the whole file on a busy
    // machine (thousands of TIME_WAIT entries) costs milliseconds, on every hook call.
    // An IPv4 listener takes 127.0.0.1 first (and cannot coexist with a dual-stack `::`
    // one), so tcp6 is only read when tcp has none.
    let open = |path| {
        std::fs::File::open(path)
            .ok()
            .map(|f| BufReader::with_capacity(4096, f))
    };
    open("/proc/net/tcp")
        .and_then(|t| listener_uid_in(t, port))
        .or_else(|| open("/proc/net/tcp6").and_then(|t| listener_uid_in6(t, port)))
}

fn listener_uid_in(table: impl BufRead, port: u16) -> Option<u32> {
    find_listener(table, port, |addr| {
        // The kernel prints the address as the raw in-memory u32, in host byte order.
        let ip = u32::from_str_radix(addr, 16).ok()?.to_ne_bytes();
        Some(matches!(ip, [127, 0, 0, 1] | [0, 0, 0, 0]))
    })
}

fn listener_uid_in6(table: impl BufRead, port: u16) -> Option<u32> {
    find_listener(table, port, |addr| {
        // Four raw in-memory u32 words, each printed in host byte order.
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, word) in bytes.chunks_exact_mut(4).enumerate() {
            let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
            word.copy_from_slice(&w.to_ne_bytes());
        }
        let ip = std::net::Ipv6Addr::from(bytes);
        Some(
            ip.is_unspecified()
                || ip.is_loopback()
                || ip.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST),
        )
    })
}

/// The uid of the first listener on `port` whose hex address `ours` accepts, reading only
/// the listening part of a `/proc/net/tcp{,6}` table.
fn find_listener(
    table: impl BufRead,
    port: u16,
    ours: impl Fn(&str) -> Option<bool>,
) -> Option<u32> {
    for line in table.lines().skip(1) {
        let line = line.ok()?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(3) != Some(&"0A") {
            return None; // past the listening sockets
        }
        let (addr, p) = f.get(1)?.split_once(':')?;
        if u16::from_str_radix(p, 16).ok()? == port && ours(addr)? {
            return f.get(7)?.parse().ok();
        }
    }
    None
}

/// Refuses to talk (and send a token) to a port another local user listens on: on a shared
/// machine someone else could take 127.0.0.1:3001 first and collect every hook's token.
/// Root's sockets are trusted (`cco install --system`).
pub fn check_listener_owner(port: u16) -> Result<(), String> {
    match foreign_listener(port) {
        Some(uid) => Err(format!(
            "127.0.0.1:{port} is held by another user (uid {uid}), not by your cco — \
             see `ss -ltnp 'sport = :{port}'`; change the port in your config if it is legitimately theirs"
        )),
        None => Ok(()),
    }
}

/// The uid of another user (not root) listening on 127.0.0.1:`port`, if any.
pub fn foreign_listener(port: u16) -> Option<u32> {
    listener_uid(port).filter(|&uid| uid != crate::paths::current_uid() && uid != 0)
}

/// Loopback address of a local service; always 127.0.0.1, never a name lookup.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn connect(addr: SocketAddr, req: &Request, timeout: Duration) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        req.method, req.path, addr
    );
    for (k, v) in req.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    if let Some(body) = req.body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut buf = head.into_bytes();
    if let Some(body) = req.body {
        buf.extend_from_slice(body);
    }
    (&stream).write_all(&buf)?;
    Ok(stream)
}

fn read_head(reader: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), ClientError> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ClientError::Protocol(format!("status line {:?}", line.trim_end())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Protocol("connection closed in headers".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((status, headers));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// Sends `req` to `addr` and reads the whole response. `timeout` bounds the connect and
/// each read or write.
pub fn send(addr: SocketAddr, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut reader = open(addr, req, timeout)?;
    let mut body = Vec::new();
    reader
        .body
        .by_ref()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)?;
    if body.len() > MAX_BODY {
        return Err(ClientError::Protocol("response too large".into()));
    }
    Ok(Response {
        status: reader.status,
        headers: reader.headers,
        body,
    })
}

/// A response whose body is read as it arrives (Server-Sent Events).
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn BufRead + Send>,
}

/// Sends `req` and returns once the response head is in; the body streams.
pub fn open(addr: SocketAddr, req: &Request, timeout: Duration) -> Result<Streaming, ClientError> {
    let stream = connect(addr, req, timeout)?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let chunked = find_header(&headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = find_header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    let body: Box<dyn BufRead + Send> = if chunked {
        Box::new(BufReader::new(Chunked {
            inner: reader,
            left: 0,
            done: false,
        }))
    } else if let Some(n) = length {
        Box::new(reader.take(n))
    } else {
        Box::new(reader)
    };
    Ok(Streaming {
        status,
        headers,
        body,
    })
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(reply).unwrap();
        });
        addr
    }

    #[test]
    fn content_length_and_chunked() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = send(addr, &Request::get("/"), Duration::from_secs(2)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));

        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let r = send(addr, &Request::get("/"), Duration::from_secs(2)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
    }

    #[test]
    fn listener_owner_from_proc_net_tcp() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo:08X}:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n\
             1: 00000000:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 3 1\n\
             2: {lo:08X}:0BBA {lo:08X}:D431 01 00000000:00000000 00:00000000 00000000  2000        0 2 1\n\
             3: {lo:08X}:0BBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  2001        0 3 1\n"
        );
        assert_eq!(listener_uid_in(table.as_bytes(), 3000), Some(1000));
        assert_eq!(
            listener_uid_in(table.as_bytes(), 3001),
            Some(1001),
            "a wildcard listener counts"
        );
        assert_eq!(
            listener_uid_in(table.as_bytes(), 3002),
            None,
            "an established socket is not a listener"
        );
        assert_eq!(
            listener_uid_in(table.as_bytes(), 3003),
            None,
            "the listeners end at the first other state"
        );
        // A real listener of ours is ours.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if std::path::Path::new("/proc/net/tcp").exists() {
            assert_eq!(listener_uid(port), Some(crate::paths::current_uid()));
        }
        assert!(check_listener_owner(port).is_ok());
    }

    #[test]
    fn listener_owner_from_proc_net_tcp6() {
        // Each of the four words is printed as a raw host-order u32.
        let hex = |ip: std::net::Ipv6Addr| -> String {
            ip.octets()
                .chunks_exact(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect()
        };
        let any = hex(std::net::Ipv6Addr::UNSPECIFIED);
        let lo = hex(std::net::Ipv6Addr::LOCALHOST);
        let mapped = hex(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let other = hex("fe80::1".parse().unwrap());
        let row = |sl: u32, addr: &str, port: u16, st: &str, uid: u32| {
            format!(
                "{sl:4}: {addr}:{port:04X} {any}:0000 {st} 00000000:00000000 00:00000000 00000000 {uid:5}        0 {sl} 1\n"
            )
        };
        let table = [
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n".to_string(),
            row(0, &other, 3000, "0A", 1000),
            row(1, &any, 3001, "0A", 65534),
            row(2, &lo, 3002, "0A", 1002),
            row(3, &mapped, 3003, "0A", 1003),
            row(4, &any, 3004, "01", 1004),
            row(5, &any, 3005, "0A", 1005),
        ]
        .concat();
        let t = table.as_bytes();
        assert_eq!(
            listener_uid_in6(t, 3000),
            None,
            "another address is not ours"
        );
        assert_eq!(
            listener_uid_in6(t, 3001),
            Some(65534),
            "`::` takes 127.0.0.1 too"
        );
        assert_eq!(listener_uid_in6(t, 3002), Some(1002));
        assert_eq!(listener_uid_in6(t, 3003), Some(1003));
        assert_eq!(listener_uid_in6(t, 3004), None, "not a listener");
        assert_eq!(
            listener_uid_in6(t, 3005),
            None,
            "the listeners end at the first other state"
        );
        assert_eq!(
            listener_uid_in6("garbage\n0: zz:0BB8 x 0A".as_bytes(), 3000),
            None
        );
        // A real dual-stack listener of ours is found, where the machine has IPv6.
        if let Ok(l) = TcpListener::bind("[::]:0") {
            let port = l.local_addr().unwrap().port();
            if std::path::Path::new("/proc/net/tcp6").exists() {
                assert_eq!(listener_uid(port), Some(crate::paths::current_uid()));
            }
            assert!(check_listener_owner(port).is_ok());
        }
    }

    #[test]
    fn refused_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            send(addr, &Request::get("/"), Duration::from_secs(1)),
            Err(ClientError::Refused)
        ));
    }
}
