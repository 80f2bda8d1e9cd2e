//! The TLS listener and the limits that keep one client from locking out the others.
//!
//! Every connection, from its TCP accept on, is registered with its peer address, whether a
//! request is in progress and when it was last active. The limits (defaults in
//! [`ListenerLimits::default`]):
//!
//! - a TLS handshake must finish within `handshake_timeout`;
//! - a connection that has not started a request within `first_request_timeout` of its
//!   handshake, or has been idle between requests for `idle_timeout`, is closed;
//! - on HTTP/1.1, a request head must be complete within `header_timeout` of its first byte
//!   (see [`Served`]); the server bounds body reads on its side;
//! - at most `max_connections` connections in all and `max_connections_per_ip` per peer
//!   address. At a limit, a new connection does not wait and is not refused while some
//!   connection is idle: the idle one goes (connections whose caller was never authorised
//!   first, then the longest idle). Only when every connection is busy is the new one closed.
//!
//! So an attacker holding thousands of idle connections, even from many addresses, cannot keep
//! an authorised client out: each new connection of that client displaces an idle one.

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Limits of the TLS listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Longest a client may take to complete the handshake.
    pub handshake_timeout: Duration,
    /// Longest a connection may stay open after its handshake without starting a request.
    pub first_request_timeout: Duration,
    /// Longest an HTTP/1.1 request head may take to arrive, from its first byte (zero: no
    /// limit beyond the idle timeout).
    pub header_timeout: Duration,
    /// Longest a connection may stay idle between two requests.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one peer address.
    pub max_connections_per_ip: usize,
    /// How long a connection asked to close (idle, evicted, shutdown) gets to finish the
    /// requests it has in progress before it is dropped.
    pub close_grace: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            // KES (Go's http.Server): ReadHeaderTimeout 5 s, IdleTimeout 90 s.
            first_request_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_connections: 8192,
            // A load balancer in front of the nodes (TCP pass-through) puts every client
            // behind one address: leave it room.
            max_connections_per_ip: 1024,
            close_grace: Duration::from_secs(1),
        }
    }
}

/// One registered connection, shared between the listener and whoever serves it.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    ip: IpAddr,
    registry: Arc<Registry>,
    /// Requests in progress.
    busy: AtomicU32,
    /// Whether a request has started on this connection (the first-request limit applies until
    /// one has).
    started: AtomicBool,
    /// Milliseconds since the registry's epoch of the last activity.
    last_active_ms: AtomicU64,
    /// Set once a request of this connection passed authorisation.
    trusted: AtomicBool,
    /// The listener asked the connection to close. Whoever serves it reads this once per
    /// wake-up (see [`Conn::drive`]) and is woken through `closer`; the watchdog through
    /// `watch`.
    closing: AtomicBool,
    closer: Mutex<Option<std::task::Waker>>,
    /// When the head of the next request started to arrive (milliseconds since the registry's
    /// epoch, plus one), 0 when none is arriving. Set by [`Served`] on HTTP/1.1 connections,
    /// cleared when the request starts.
    head_since_ms: AtomicU64,
    /// When the connection's watchdog looks next (milliseconds since the registry's epoch).
    watch_at_ms: AtomicU64,
    /// Wakes the watchdog early: the connection is asked to close, or a head started while
    /// the watchdog sleeps past the head's deadline.
    watch: Notify,
}

impl Conn {
    /// Marks a request in progress until the guard is dropped. The idle clock is not read
    /// here: a busy connection is never idle, and the guard's drop records when the request
    /// ended, which is when the idle time starts.
    /// The guard borrows the connection: whoever serves it holds it for longer than any of its
    /// requests, and a request then changes one counter and no reference count.
    pub fn request(&self) -> RequestGuard<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Relaxed);
        }
        if self.head_since_ms.load(Ordering::Relaxed) != 0 {
            self.head_since_ms.store(0, Ordering::Relaxed);
        }
        RequestGuard(self)
    }

    /// Request bytes arrived: with no request in progress and none arriving, they start the
    /// head of the next one, and its clock. One clock read per request; the watchdog is woken
    /// only when it would otherwise look later than the head's deadline (the connection was
    /// quiet), so a busy keep-alive connection costs no timer per request.
    fn bytes_arrived(&self, header_timeout: Duration) {
        if self.head_since_ms.load(Ordering::Relaxed) != 0 || self.busy.load(Ordering::Acquire) > 0
        {
            return;
        }
        let now = self.registry.now_ms();
        // SeqCst with the watchdog's store of `watch_at_ms` and load of `head_since_ms`: one of
        // the two sees the other's store, so a head is never left unwatched.
        self.head_since_ms.store(now + 1, Ordering::SeqCst);
        if self.watch_at_ms.load(Ordering::SeqCst) > now + header_timeout.as_millis() as u64 {
            self.watch.notify_one();
        }
    }

    /// How long the head of the next request has been arriving, if one is.
    fn head_for(&self) -> Option<Duration> {
        match self.head_since_ms.load(Ordering::SeqCst) {
            0 => None,
            since => Some(Duration::from_millis(
                self.registry.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    /// Records that a request of this connection was authorised: under pressure, idle
    /// connections that never were go first.
    pub fn trust(&self) {
        self.trusted.store(true, Ordering::Relaxed);
    }

    /// Drives `served`, the future serving the connection, to its end. When the listener wants
    /// the connection closed (idle too long, evicted, or the server is shutting down), calls
    /// `graceful` on it once, so it finishes what is in progress and closes; the listener drops
    /// it if it takes longer than the close grace. Costs one load per wake-up: the waker is
    /// stored again only when it changes.
    pub fn drive<F, G>(&self, served: F, graceful: G) -> Drive<'_, F, G>
    where
        F: std::future::Future,
        G: FnOnce(Pin<&mut F>),
    {
        Drive {
            conn: self,
            served,
            graceful: Some(graceful),
            stored: None,
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Asks the connection to close; the registry's lock is held.
    fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(w) = self.closer.lock().take() {
            w.wake();
        }
        self.watch.notify_one();
    }

    /// Resolves once the connection is asked to close; for the watchdog, `watch`'s only waiter
    /// (a notification that finds it not waiting is kept for its next wait).
    async fn closed(&self) {
        while !self.closing.load(Ordering::SeqCst) {
            self.watch.notified().await;
        }
    }

    fn touch(&self) {
        self.last_active_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }

    /// How long the connection has been idle; `None` while a request is in progress.
    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.last_active_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(
            self.registry.now_ms().saturating_sub(last),
        ))
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Conn::drive`].
    pub struct Drive<'c, F, G> {
        conn: &'c Conn,
        #[pin]
        served: F,
        graceful: Option<G>,
        stored: Option<std::task::Waker>,
    }
}

impl<F: std::future::Future, G: FnOnce(Pin<&mut F>)> std::future::Future for Drive<'_, F, G> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        if this.graceful.is_some() {
            if this
                .stored
                .as_ref()
                .is_none_or(|w| !w.will_wake(cx.waker()))
            {
                *this.conn.closer.lock() = Some(cx.waker().clone());
                *this.stored = Some(cx.waker().clone());
            }
            // After the store: a close that comes after this load wakes the new waker.
            if this.conn.closing.load(Ordering::SeqCst) {
                if let Some(graceful) = this.graceful.take() {
                    graceful(this.served.as_mut());
                }
            }
        }
        this.served.poll(cx)
    }
}

/// A request in progress on a [`Conn`].
#[derive(Debug)]
pub struct RequestGuard<'a>(&'a Conn);

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open connection of one listener.
#[derive(Debug)]
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections asked to close that have not ended yet; they no longer count against the
    /// limits (each ends within the handshake timeout or the close grace).
    closing: usize,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Makes room for a connection from `ip` and registers it, or `None` when every
    /// connection in the way is busy.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ListenerLimits) -> Option<Arc<Conn>> {
        let mut inner = self.inner.lock();
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.max_connections_per_ip.max(1) && !Self::evict(&mut inner, Some(ip)) {
            return None;
        }
        let open = inner.conns.len().saturating_sub(inner.closing);
        if open >= limits.max_connections.max(1) && !Self::evict(&mut inner, None) {
            return None;
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            ip,
            registry: Arc::clone(self),
            busy: AtomicU32::new(0),
            started: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(self.now_ms()),
            trusted: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            closer: Mutex::new(None),
            head_since_ms: AtomicU64::new(0),
            watch_at_ms: AtomicU64::new(u64::MAX),
            watch: Notify::new(),
        });
        inner.conns.insert(conn.id, Arc::clone(&conn));
        *inner.per_ip.entry(ip).or_default() += 1;
        Some(conn)
    }

    /// Asks the idle connection that matters least (from `ip` if given) to close: one never
    /// authorised before one that was, then the longest idle. `false`: none is idle.
    fn evict(inner: &mut Inner, ip: Option<IpAddr>) -> bool {
        let victim = inner
            .conns
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip) && !c.is_closing())
            .filter_map(|c| c.idle_for().map(|idle| (c, idle)))
            .max_by_key(|(c, idle)| (!c.trusted.load(Ordering::Relaxed), *idle))
            .map(|(c, _)| Arc::clone(c));
        match victim {
            Some(c) => {
                c.begin_close();
                inner.closing += 1;
                if let Some(n) = inner.per_ip.get_mut(&c.ip) {
                    // The closing connection no longer counts for its address either.
                    *n = n.saturating_sub(1);
                }
                tracing::debug!(peer = %c.ip, "idle connection closed to admit a new one");
                true
            }
            None => false,
        }
    }

    /// Asks a connection to close on its own account (idle, shutdown).
    fn close(&self, conn: &Conn) {
        let mut inner = self.inner.lock();
        if !conn.is_closing() {
            conn.begin_close();
            inner.closing += 1;
            if let Some(n) = inner.per_ip.get_mut(&conn.ip) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn remove(&self, conn: &Conn) {
        let mut inner = self.inner.lock();
        if inner.conns.remove(&conn.id).is_none() {
            return;
        }
        if conn.is_closing() {
            inner.closing = inner.closing.saturating_sub(1);
        } else if let Some(n) = inner.per_ip.get_mut(&conn.ip) {
            *n = n.saturating_sub(1);
        }
        if inner.per_ip.get(&conn.ip) == Some(&0) {
            inner.per_ip.remove(&conn.ip);
        }
    }

    fn close_all(&self) {
        let conns: Vec<Arc<Conn>> = self.inner.lock().conns.values().cloned().collect();
        for c in conns {
            self.close(&c);
        }
    }
}

/// Unregisters a connection when its task ends, however it ends.
struct Registration(Arc<Conn>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.registry.remove(&self.0);
    }
}

/// Logs refused connections at most once a second, so a flood does not flood the log too.
struct RefusalLog {
    last: Option<Instant>,
    count: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr) {
        self.count += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                peer = %peer,
                refused = self.count,
                "connection refused: every connection slot (in all, or for this address) is busy"
            );
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}

/// Accepts TCP connections until `cancel` fires, runs each TLS handshake in its own task under
/// the handshake timeout (so a slow client never blocks others), and hands established
/// connections to `serve` with their [`Conn`], which `serve` must mark busy while it works on a
/// request and watch for [`Conn::closing`]. The rustls configuration is read at every accept,
/// so swapping it (on SIGHUP) affects new connections only. See the module documentation for
/// the limits.
pub async fn serve_tls<F, Fut>(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    limits: ListenerLimits,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(Served, SocketAddr, Arc<Conn>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        inner: Mutex::new(Inner::default()),
    });
    let connections = tokio_util::task::TaskTracker::new();
    let mut refusals = RefusalLog {
        last: None,
        count: 0,
    };
    loop {
        let (tcp, addr) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Usually EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(conn) = registry.admit(addr.ip(), &limits) else {
            refusals.refused(addr);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.load_full());
        let serve = serve.clone();
        connections.spawn(run_connection(tcp, addr, acceptor, conn, limits, serve));
    }
    // Stop accepting, ask every open connection to finish, and wait for the requests in
    // progress: a node stopped for a restart answers what it started (a forwarded write's
    // answer included) instead of dropping it. Each connection gives up after its close grace.
    drop(listener);
    registry.close_all();
    connections.close();
    let drained = tokio::time::timeout(
        limits.close_grace + Duration::from_millis(500),
        connections.wait(),
    )
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the close grace"
        );
    }
}

async fn run_connection<F, Fut>(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    conn: Arc<Conn>,
    limits: ListenerLimits,
    serve: F,
) where
    F: Fn(Served, SocketAddr, Arc<Conn>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _registration = Registration(Arc::clone(&conn));
    let stream = tokio::select! {
        r = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => match r {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "tls handshake timed out");
                return;
            }
        },
        _ = conn.closed() => return,
    };
    // The first-request clock starts once the handshake is done.
    conn.touch();
    // HTTP/2 frames (pings, window updates) arrive between requests: only HTTP/1.1 has heads
    // to time. A client that offers no ALPN is taken for HTTP/1.1.
    let header_timeout = (stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()))
        .then_some(limits.header_timeout)
        .filter(|t| !t.is_zero());
    let stream = Served {
        inner: stream,
        conn: Arc::clone(&conn),
        header_timeout,
    };
    // Served in a task of its own: a wake-up of the connection (every request) then polls only
    // the connection, not this watchdog's close, notification and timer too.
    let mut served = tokio::spawn(serve(stream, addr, Arc::clone(&conn)));
    let mut closing_since: Option<Instant> = None;
    loop {
        let wait = match closing_since {
            Some(since) => {
                (limits.close_grace + Duration::from_millis(100)).saturating_sub(since.elapsed())
            }
            None => match next_look(&conn, &limits, header_timeout) {
                Ok(wait) => wait,
                Err(why) => {
                    tracing::debug!(peer = %addr, reason = why, "closing a connection");
                    conn.registry.close(&conn);
                    closing_since = Some(Instant::now());
                    continue;
                }
            },
        };
        tokio::select! {
            _ = &mut served => return,
            // Asked to close, or a head started on a quiet connection: look again.
            _ = conn.watch.notified(), if closing_since.is_none() => {
                if conn.is_closing() {
                    closing_since = Some(Instant::now());
                }
            }
            _ = tokio::time::sleep(wait) => {
                if closing_since.is_some_and(|s| s.elapsed() >= limits.close_grace) {
                    // It did not finish within the grace: drop it.
                    tracing::debug!(peer = %addr, "connection dropped after its close grace");
                    served.abort();
                    let _ = served.await;
                    return;
                }
            }
        }
    }
}

/// When a connection's watchdog looks next, or why the connection must close now.
fn next_look(
    conn: &Conn,
    limits: &ListenerLimits,
    header_timeout: Option<Duration>,
) -> Result<Duration, &'static str> {
    let idle = conn.idle_for();
    let mut wait = match idle {
        Some(idle) => {
            let (limit, why) = if !conn.started.load(Ordering::Relaxed) {
                (
                    limits.first_request_timeout,
                    "no request within the first-request timeout",
                )
            } else {
                (limits.idle_timeout, "idle for the idle timeout")
            };
            if idle >= limit {
                return Err(why);
            }
            limit - idle
        }
        // Busy: look again after the longest idle period; the request's own limits bound it
        // meanwhile.
        None => limits.idle_timeout.max(Duration::from_secs(1)),
    };
    let Some(header_timeout) = header_timeout else {
        return Ok(wait);
    };
    // While requests come and go, look once per header timeout: a head that starts meanwhile
    // is then looked at by its deadline without waking the watchdog. A connection quiet for
    // longer sleeps until its idle deadline, and its next head wakes the watchdog (once).
    if idle.is_none_or(|idle| idle < header_timeout) {
        wait = wait.min(header_timeout);
    }
    let at = conn.registry.now_ms() + wait.as_millis() as u64;
    conn.watch_at_ms.store(at, Ordering::SeqCst);
    if let Some(head) = conn.head_for() {
        if head >= header_timeout {
            return Err("request head not complete within the header timeout");
        }
        wait = wait.min(header_timeout - head);
    }
    Ok(wait)
}

/// An established connection's stream, as the listener hands it to whoever serves it. On
/// HTTP/1.1 its reads tell the listener when the head of a request starts to arrive, so the
/// listener can enforce `header_timeout` with the connection's one watchdog timer instead of a
/// timer per request.
#[derive(Debug)]
pub struct Served {
    inner: TlsStream<TcpStream>,
    conn: Arc<Conn>,
    header_timeout: Option<Duration>,
}

impl Served {
    /// The TLS session: the peer's certificates, the protocol agreed.
    pub fn tls(&self) -> &rustls::ServerConnection {
        self.inner.get_ref().1
    }
}

impl AsyncRead for Served {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Some(t), Poll::Ready(Ok(()))) = (this.header_timeout, &r) {
            if buf.filled().len() > before {
                this.conn.bytes_arrived(t);
            }
        }
        r
    }
}

impl AsyncWrite for Served {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn registry() -> Arc<Registry> {
        Arc::new(Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn limits(max: usize, per_ip: usize) -> ListenerLimits {
        ListenerLimits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..Default::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn at_capacity_an_idle_connection_makes_room() {
        let r = registry();
        let l = limits(2, 10);
        let a = r.admit(A, &l).unwrap();
        let b = r.admit(A, &l).unwrap();
        let _busy = b.request();
        let c = r.admit(B, &l).unwrap();
        assert!(a.is_closing(), "the idle connection was closed");
        assert!(!b.is_closing() && !c.is_closing());
        // Every connection busy now: the next one is refused rather than waiting.
        let _busy_c = c.request();
        assert!(r.admit(B, &l).is_none());
    }

    #[test]
    fn never_authorised_idle_connections_go_first() {
        let r = registry();
        let l = limits(2, 10);
        let old_unknown = r.admit(A, &l).unwrap();
        let trusted = r.admit(A, &l).unwrap();
        trusted.trust();
        // The trusted one has been idle for as long as or longer than the unknown one.
        r.admit(B, &l).unwrap();
        assert!(old_unknown.is_closing());
        assert!(!trusted.is_closing());
    }

    #[test]
    fn per_address_limit_evicts_that_address_only() {
        let r = registry();
        let l = limits(100, 2);
        let other = r.admit(B, &l).unwrap();
        let a1 = r.admit(A, &l).unwrap();
        let a2 = r.admit(A, &l).unwrap();
        r.admit(A, &l).unwrap();
        // One of the address's two idle connections (equally idle here) made room.
        assert!(a1.is_closing() != a2.is_closing());
        assert!(!other.is_closing());
    }

    #[tokio::test]
    async fn a_close_reaches_the_driven_connection() {
        // A connection future that ends only once told to shut down gracefully, and is never
        // woken by anything else: only the close can wake and end it.
        struct UntilGraceful(bool);
        impl std::future::Future for UntilGraceful {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                if self.0 {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
        let r = registry();
        let conn = r.admit(A, &limits(10, 10)).unwrap();
        let driven = Arc::clone(&conn);
        let task = tokio::spawn(async move {
            driven
                .drive(UntilGraceful(false), |mut f| f.as_mut().get_mut().0 = true)
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        r.close(&conn);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the close did not reach the driven connection")
            .unwrap();
    }

    #[test]
    fn closed_connections_free_their_slots() {
        let r = registry();
        let l = limits(1, 1);
        let a = r.admit(A, &l).unwrap();
        let _busy = a.request();
        assert!(r.admit(A, &l).is_none());
        drop(_busy);
        let reg = Registration(a);
        drop(reg);
        assert!(r.admit(A, &l).is_some());
        assert_eq!(r.inner.lock().conns.len(), 1);
    }
}
