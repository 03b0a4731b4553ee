//! Pods and clients: an echo server that says who it is and whom it saw, and
//! a probe that tells what happened to one connection.

use std::io::{ErrorKind, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{CommandError, Netns, join_netns};

/// How often the echo server looks at its sockets when nothing happened.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP: one connection, the server's line, EOF.
    Tcp,
    /// UDP: one datagram each way, on a connected socket.
    Udp,
}

impl Proto {
    /// `tcp` / `udp`, as iptables and Kubernetes (upper-cased) spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One peer an echo server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// TCP connection or UDP datagram.
    pub proto: Proto,
    /// The peer's address as the pod saw it (IPv4-mapped IPv6 unmapped).
    pub ip: IpAddr,
    /// The peer's port.
    pub port: u16,
}

/// A "pod": a thread inside a namespace that answers every TCP connection
/// and every UDP datagram on `port` (IPv4 and IPv6, any address) with
/// `<pod name> <peer ip> <peer port>\n`, and records the peers it saw.
/// Stopped and joined on drop.
#[derive(Debug)]
pub struct EchoServer {
    pod: String,
    port: u16,
    peers: Arc<Mutex<Vec<Peer>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts the server in `netns`, answering as `pod`. Returns once every
    /// socket is bound and listening, or with the reason it could not be.
    pub fn start(netns: &Netns, pod: &str, port: u16) -> Result<EchoServer, CommandError> {
        let path = netns.path();
        let name = pod.to_owned();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), CommandError>>();
        let thread = {
            let (peers, stop) = (Arc::clone(&peers), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("echo-{pod}"))
                .spawn(move || {
                    let sockets = join_netns(&path).and_then(|()| bind_all(port));
                    match sockets {
                        Ok(sockets) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(&name, &sockets, &peers, &stop);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| CommandError(format!("cannot start echo server thread: {e}")))?
        };
        let server = EchoServer {
            pod: pod.to_owned(),
            port,
            peers,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CommandError(format!("echo server {pod} ended before listening"))),
        }
    }

    /// The pod name it answers with.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every peer answered so far, in order.
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Sockets {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

fn io_error(what: &str, e: std::io::Error) -> CommandError {
    CommandError(format!("echo server: {what}: {e}"))
}

/// TCP and UDP sockets on `0.0.0.0:port` and `[::]:port` (IPv6 only, so the
/// two never clash), non-blocking.
fn bind_all(port: u16) -> Result<Sockets, CommandError> {
    let mut sockets = Sockets {
        tcp: Vec::new(),
        udp: Vec::new(),
    };
    for ip in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ] {
        let addr = SocketAddr::new(ip, port);
        for proto in [Proto::Tcp, Proto::Udp] {
            let (ty, protocol) = match proto {
                Proto::Tcp => (Type::STREAM, Protocol::TCP),
                Proto::Udp => (Type::DGRAM, Protocol::UDP),
            };
            let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))
                .map_err(|e| io_error("socket", e))?;
            if ip.is_ipv6() {
                socket.set_only_v6(true).map_err(|e| io_error("IPV6_V6ONLY", e))?;
            }
            socket
                .set_reuse_address(true)
                .map_err(|e| io_error("SO_REUSEADDR", e))?;
            socket
                .bind(&addr.into())
                .map_err(|e| io_error(&format!("bind {addr} {}", proto.as_str()), e))?;
            socket
                .set_nonblocking(true)
                .map_err(|e| io_error("O_NONBLOCK", e))?;
            match proto {
                Proto::Tcp => {
                    socket.listen(128).map_err(|e| io_error("listen", e))?;
                    sockets.tcp.push(socket.into());
                }
                Proto::Udp => sockets.udp.push(socket.into()),
            }
        }
    }
    Ok(sockets)
}

fn serve(pod: &str, sockets: &Sockets, peers: &Mutex<Vec<Peer>>, stop: &AtomicBool) {
    let record = |proto: Proto, peer: SocketAddr| {
        let peer = Peer {
            proto,
            ip: peer.ip().to_canonical(),
            port: peer.port(),
        };
        peers.lock().unwrap_or_else(PoisonError::into_inner).push(peer);
        format!("{pod} {} {}\n", peer.ip, peer.port)
    };
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for listener in &sockets.tcp {
            while let Ok((mut stream, peer)) = listener.accept() {
                busy = true;
                let reply = record(Proto::Tcp, peer);
                // A fresh connection's send buffer takes one short line; the
                // stream is closed (FIN) when dropped.
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = stream.write_all(reply.as_bytes());
            }
        }
        for socket in &sockets.udp {
            while let Ok((_, peer)) = socket.recv_from(&mut buf) {
                busy = true;
                let reply = record(Proto::Udp, peer);
                let _ = socket.send_to(reply.as_bytes(), peer);
            }
        }
        if !busy {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// What happened to one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// An echo server answered: its pod name and the peer address it saw.
    Reply {
        /// The pod that answered.
        pod: String,
        /// The client's address as that pod saw it (after any SNAT).
        peer_ip: IpAddr,
    },
    /// Refused: a TCP RST or an ICMP port unreachable (an iptables REJECT).
    /// For TCP the ICMP error counts as soon as it arrives (read from the
    /// socket's error queue), not only after a SYN retransmission.
    Refused,
    /// No answer within the timeout (a DROP, or nothing there).
    Timeout,
    /// An ICMP host/network unreachable, or no route.
    Unreachable,
    /// Anything else, described.
    Other(String),
}

impl ProbeResult {
    /// The answering pod, if one answered.
    pub fn pod(&self) -> Option<&str> {
        match self {
            ProbeResult::Reply { pod, .. } => Some(pod),
            _ => None,
        }
    }

    /// The peer address the answering pod saw, if one answered.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        match self {
            ProbeResult::Reply { peer_ip, .. } => Some(*peer_ip),
            _ => None,
        }
    }
}

/// One TCP connection or UDP exchange from a thread inside `netns` to
/// `dst:port`, from the address the kernel picks.
pub fn probe(netns: &Netns, proto: Proto, dst: IpAddr, port: u16, timeout: Duration) -> ProbeResult {
    probe_in(netns, proto, None, dst, port, timeout)
}

/// [`probe`] from the source address `src` (which must be one of the
/// namespace's addresses).
pub fn probe_from(
    netns: &Netns,
    proto: Proto,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> ProbeResult {
    probe_in(netns, proto, Some(src), dst, port, timeout)
}

fn probe_in(
    netns: &Netns,
    proto: Proto,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> ProbeResult {
    netns
        .enter(|| probe_here(proto, src, dst, port, timeout))
        .unwrap_or_else(|e| ProbeResult::Other(e.to_string()))
}

/// [`probe`] on the calling thread, in whatever namespace it is in: for
/// many probes in one [`Netns::enter`] closure.
pub fn probe_here(
    proto: Proto,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> ProbeResult {
    let dst = SocketAddr::new(dst, port);
    let result = match proto {
        Proto::Tcp => tcp_exchange(src, dst, timeout),
        Proto::Udp => udp_exchange(src, dst, timeout),
    };
    match result {
        Ok(reply) => parse_reply(&reply),
        Err(e) => e,
    }
}

fn classify(what: &str, e: &std::io::Error) -> ProbeResult {
    match e.kind() {
        ErrorKind::ConnectionRefused => ProbeResult::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ProbeResult::Timeout,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ProbeResult::Unreachable,
        _ => ProbeResult::Other(format!("{what}: {e}")),
    }
}

fn new_socket(src: Option<IpAddr>, dst: SocketAddr, proto: Proto) -> Result<Socket, ProbeResult> {
    let (ty, protocol) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(dst), ty, Some(protocol))
        .map_err(|e| ProbeResult::Other(format!("socket: {e}")))?;
    if let Some(src) = src {
        let addr = SocketAddr::new(src, 0);
        socket
            .bind(&addr.into())
            .map_err(|e| ProbeResult::Other(format!("bind {addr}: {e}")))?;
    }
    Ok(socket)
}

fn tcp_exchange(src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> Result<String, ProbeResult> {
    let start = Instant::now();
    let socket = new_socket(src, dst, Proto::Tcp)?;
    // Queue ICMP errors for the SYN on the error queue (and so wake poll):
    // between veth pairs the REJECT's ICMP error can arrive while connect()
    // still holds the socket, and TCP then keeps it as a "soft" error until
    // the SYN is retransmitted a second later. The queue has it at once.
    let recverr = match dst {
        SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvErr, &true),
        SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvErr, &true),
    };
    recverr.map_err(|e| ProbeResult::Other(format!("IP_RECVERR: {e}")))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| ProbeResult::Other(format!("O_NONBLOCK: {e}")))?;
    match socket.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {
            wait_connected(&socket, start, timeout)?;
        }
        Err(e) => return Err(classify("connect", &e)),
    }
    socket
        .set_nonblocking(false)
        .map_err(|e| ProbeResult::Other(format!("O_NONBLOCK: {e}")))?;
    let remaining = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(50));
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(remaining))
        .map_err(|e| ProbeResult::Other(format!("SO_RCVTIMEO: {e}")))?;
    let mut reply = String::new();
    match stream.read_to_string(&mut reply) {
        Ok(_) => Ok(reply),
        Err(e) => Err(ProbeResult::Other(format!(
            "connected to {dst}, then reading failed after {:?}: {e} (got {reply:?})",
            start.elapsed()
        ))),
    }
}

/// Waits for a non-blocking connect to finish: connected, refused (RST or
/// ICMP error), or the timeout.
fn wait_connected(socket: &Socket, start: Instant, timeout: Duration) -> Result<(), ProbeResult> {
    loop {
        let remaining = timeout.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            return Err(ProbeResult::Timeout);
        }
        let wait = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, wait) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(ProbeResult::Other(format!("poll: {e}"))),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        match socket.take_error() {
            Ok(Some(e)) => return Err(classify("connect", &e)),
            Ok(None) => {}
            Err(e) => return Err(ProbeResult::Other(format!("SO_ERROR: {e}"))),
        }
        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
            if let Some(result) = queued_icmp_error(socket) {
                return Err(result);
            }
            return Err(ProbeResult::Other(format!(
                "poll reported {revents:?} without an error"
            )));
        }
        if revents.contains(PollFlags::POLLOUT) {
            return Ok(());
        }
    }
}

/// The first ICMP error on the socket's error queue, classified.
fn queued_icmp_error(socket: &Socket) -> Option<ProbeResult> {
    let mut data = [0u8; 512];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut control = vec![0u8; 512];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_ERRQUEUE,
    )
    .ok()?;
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::Ipv4RecvErr(err, _) | ControlMessageOwned::Ipv6RecvErr(err, _) = cmsg {
            let errno = i32::try_from(err.ee_errno).unwrap_or(i32::MAX);
            return Some(classify("ICMP error", &std::io::Error::from_raw_os_error(errno)));
        }
    }
    None
}

fn udp_exchange(src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> Result<String, ProbeResult> {
    let socket: UdpSocket = new_socket(src, dst, Proto::Udp)?.into();
    // Connected, so that an ICMP error for this flow is reported to us.
    socket.connect(dst).map_err(|e| classify("connect", &e))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| ProbeResult::Other(format!("SO_RCVTIMEO: {e}")))?;
    socket.send(b"probe\n").map_err(|e| classify("send", &e))?;
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).map_err(|e| classify("recv", &e))?;
    Ok(String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned())
}

fn parse_reply(reply: &str) -> ProbeResult {
    let mut fields = reply.split_whitespace();
    match (fields.next(), fields.next().map(str::parse::<IpAddr>)) {
        (Some(pod), Some(Ok(peer_ip))) => ProbeResult::Reply {
            pod: pod.to_owned(),
            peer_ip,
        },
        _ => ProbeResult::Other(format!("unexpected reply {reply:?}")),
    }
}
