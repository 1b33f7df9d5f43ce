//! A TCP proxy on loopback between a client (Baton) and a server (Prosody), for outage tests.
//! It forwards bytes both ways, and on command: holds them (towards the server, towards the
//! client, or both) until released, as a congested or stalled network does; cuts every open
//! connection at once; refuses new connections (accepts and closes them, as a server that is
//! down behind a load balancer); or closes each new connection a set time after it opened (a
//! server that accepts the client and then throws it out). It counts the connections it
//! accepted and keeps the first bytes the client sent (to see what went over the wire). Plain threads and blocking sockets, so it needs no runtime; stopped on drop.

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server (Baton's stanzas to Prosody).
    Up,
    /// Server to client (what Prosody sends Baton, echoes included).
    Down,
}

#[derive(Default)]
struct State {
    hold_up: bool,
    hold_down: bool,
    /// Open connections: both ends, to cut them.
    open: Vec<(u64, TcpStream, TcpStream)>,
    next_id: u64,
}

struct Shared {
    state: Mutex<State>,
    released: Condvar,
    refuse: AtomicBool,
    kick_after_ms: AtomicUsize,
    accepted: AtomicUsize,
    stopped: AtomicBool,
    /// The first [`KEPT_UP`] bytes sent towards the server, all connections in order.
    up: Mutex<Vec<u8>>,
}

/// How many bytes sent towards the server are kept.
const KEPT_UP: usize = 1 << 20;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(state: &State, d: Direction) -> bool {
        match d {
            Direction::Up => state.hold_up,
            Direction::Down => state.hold_down,
        }
    }
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream` (which must
    /// be on loopback too: nothing here leaves the machine).
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        anyhow::ensure!(upstream.ip().is_loopback(), "the proxy only forwards to loopback");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            released: Condvar::new(),
            refuse: AtomicBool::new(false),
            kick_after_ms: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            up: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                s.accepted.fetch_add(1, Ordering::AcqRel);
                if s.refuse.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                connect_pair(&s, client, server);
            }
        });
        Ok(Proxy { addr, shared })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds the bytes travelling `direction` until [`Proxy::release`]: they wait in the proxy
    /// (and, once its buffer is full, in the kernel), and nothing is lost.
    pub fn hold(&self, direction: Direction) {
        let mut st = self.shared.lock();
        match direction {
            Direction::Up => st.hold_up = true,
            Direction::Down => st.hold_down = true,
        }
    }

    /// Lets held bytes go, in order.
    pub fn release(&self, direction: Direction) {
        let mut st = self.shared.lock();
        match direction {
            Direction::Up => st.hold_up = false,
            Direction::Down => st.hold_down = false,
        }
        self.shared.released.notify_all();
    }

    /// Closes every open connection now (held bytes are lost, as when a link dies).
    pub fn cut(&self) {
        let open = std::mem::take(&mut self.shared.lock().open);
        for (_, a, b) in open {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        self.shared.released.notify_all();
    }

    /// While on, new connections are accepted and closed at once.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::Release);
    }

    /// Closes each new connection `after` it opened (`None`: never).
    pub fn kick_after(&self, after: Option<Duration>) {
        let ms = after.map_or(0, |d| (d.as_millis() as usize).max(1));
        self.shared.kick_after_ms.store(ms, Ordering::Release);
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }

    /// The bytes the clients sent towards the server so far (the first MiB).
    pub fn sent_up(&self) -> Vec<u8> {
        self.shared.up.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.cut();
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn connect_pair(s: &Arc<Shared>, client: TcpStream, server: TcpStream) {
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let id = {
        let mut st = s.lock();
        st.next_id += 1;
        let id = st.next_id;
        st.open.push((id, c3, s3));
        id
    };
    let kick = s.kick_after_ms.load(Ordering::Acquire);
    if kick > 0 {
        let s = s.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(kick as u64));
            let mut st = s.lock();
            if let Some(pos) = st.open.iter().position(|(i, _, _)| *i == id) {
                let (_, a, b) = st.open.remove(pos);
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        });
    }
    for (from, to, direction) in [(client, server, Direction::Up), (s2, c2, Direction::Down)] {
        let s = s.clone();
        std::thread::spawn(move || pump(&s, from, to, direction, id));
    }
}

/// Copies `from` to `to`, waiting while `direction` is held; ends (closing both) at the first
/// end of stream or error either way.
fn pump(s: &Shared, mut from: TcpStream, mut to: TcpStream, direction: Direction, id: u64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut st = s.lock();
            while Shared::held(&st, direction) && st.open.iter().any(|(i, _, _)| *i == id) {
                st = s
                    .released
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if !st.open.iter().any(|(i, _, _)| *i == id) {
                break;
            }
        }
        if direction == Direction::Up {
            let mut up = s.up.lock().unwrap_or_else(|p| p.into_inner());
            let room = KEPT_UP.saturating_sub(up.len()).min(n);
            up.extend_from_slice(&buf[..room]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    s.lock().open.retain(|(i, _, _)| *i != id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = c.try_clone().expect("clone");
                    let mut r = c;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn read_some(c: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
        c.set_read_timeout(Some(timeout)).expect("timeout");
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(buf[..n].to_vec()),
        }
    }

    #[test]
    fn forwards_holds_releases_cuts_refuses_and_kicks() {
        let proxy = Proxy::start(echo()).expect("starts");
        let mut c = TcpStream::connect(proxy.addr()).expect("connects");
        c.write_all(b"one").expect("write");
        assert_eq!(read_some(&mut c, Duration::from_secs(2)).as_deref(), Some(&b"one"[..]));
        assert_eq!(proxy.sent_up(), b"one", "what the client sent is kept");
        proxy.hold(Direction::Down);
        c.write_all(b"two").expect("write");
        assert_eq!(read_some(&mut c, Duration::from_millis(300)), None, "held");
        proxy.release(Direction::Down);
        assert_eq!(read_some(&mut c, Duration::from_secs(2)).as_deref(), Some(&b"two"[..]));
        proxy.cut();
        assert_eq!(read_some(&mut c, Duration::from_secs(2)), None, "cut");
        proxy.refuse(true);
        let mut r = TcpStream::connect(proxy.addr()).expect("accepted");
        assert_eq!(read_some(&mut r, Duration::from_secs(2)), None, "then closed");
        proxy.refuse(false);
        proxy.kick_after(Some(Duration::from_millis(200)));
        let started = Instant::now();
        let mut k = TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(read_some(&mut k, Duration::from_secs(3)), None);
        assert!(started.elapsed() >= Duration::from_millis(150), "kicked after its time");
        assert_eq!(proxy.accepted(), 3);
    }
}
