//! A site for host network faults: the agent declares host target `box` with
//! `[targets.host.network]` guard rails, and the host runs a TCP accept-and-close server and a
//! UDP echo; helpers apply faults through the agent API and look at the namespace's nftables.
//!
//! The netfaults bench includes this file too (with fixture.rs and the files beside it).
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use chaosbot::agent::protocol::{Apply, Revert};
pub use chaosbot::faults::hostnet;
use chaosbot::spec::model::{FaultSpec, FaultStep};
pub use chaosbot::spec::model::{NetAction, NetScope};

use super::fixture::{Site, SiteOptions, wait_until};
use super::netns::HostChild;

/// A TCP port inside the host with nothing of the site's on it (served by [`SERVE_PY`]).
pub const OTHER_PORT: u16 = 9000;
/// The UDP echo port inside the host.
pub const UDP_PORT: u16 = 9100;
/// A TCP sink inside the host: it reads to the end, then answers with the count of bytes.
pub const SINK_PORT: u16 = 9200;
pub const HOST_TARGET: &str = "box";

/// A TCP accept-and-close server on argv[2], a UDP echo on argv[3] and a TCP sink on argv[4]
/// (reads to the end, answers with the byte count), all on argv[1]; with argv[5] (an IPv6
/// address) a second UDP echo on it, same port.
const SERVE_PY: &str = r#"
import socket, sys, threading
ip, tport, uport, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((ip, tport)); t.listen(128)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, uport))
if len(sys.argv) > 5:
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.bind((sys.argv[5], uport))
    def udp6():
        while True:
            d, a = u6.recvfrom(2048); u6.sendto(d, a)
    threading.Thread(target=udp6, daemon=True).start()
k = socket.socket(); k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
k.bind((ip, sport)); k.listen(16)
def tcp():
    while True:
        c, _ = t.accept(); c.close()
def udp():
    while True:
        d, a = u.recvfrom(2048); u.sendto(d, a)
def drain(c):
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
def sink():
    while True:
        c, _ = k.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=sink, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

pub struct NetSite {
    pub site: Site,
    _servers: HostChild,
    run: u32,
}

/// `nft` inside the host's namespace.
pub fn nft_in(site: &Site, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &site.host.name, "nft"])
        .args(args)
        .output();
    match out {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

pub fn in_ns(site: &Site, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &site.host.name])
        .args(args)
        .output()
        .expect("run a command in the namespace");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn chaosbot_tables(site: &Site) -> Vec<String> {
    chaosbot_tables_in(&site.host.name)
}

/// Chaosbot's tables in namespace `ns`.
pub fn chaosbot_tables_in(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("table"), Some(_family), Some(name)) => Some(name),
                _ => None,
            }
        })
        .filter(|t| t.starts_with(hostnet::TABLE_PREFIX))
        .map(str::to_string)
        .collect()
}

/// A site whose agent declares host target `box` with these `[targets.host.network]` lines,
/// with the test servers inside; None (after `SKIP:`) when it cannot be made.
pub async fn net_site(rails: &str) -> Option<NetSite> {
    net_site_with(rails, "").await
}

/// [`net_site`] with more lines in the agent's agent.toml (e.g. a process target).
pub async fn net_site_with(rails: &str, agent_toml: &str) -> Option<NetSite> {
    let mut site = match Site::new(SiteOptions::default()) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return None;
        }
    };
    if !nft_in(&site, &["list", "tables"]).0 {
        eprintln!("SKIP: `nft` cannot run here (install the nftables package)");
        return None;
    }
    let mut toml = std::fs::read_to_string(&site.agent_config).expect("read agent.toml");
    toml.push_str(&format!(
        "\n{agent_toml}\n[[targets.host]]\nname = \"{HOST_TARGET}\"\n\n[targets.host.network]\n{rails}\n"
    ));
    std::fs::write(&site.agent_config, toml).expect("write agent.toml");
    // The controller knows the host as the agent's; the rails are the agent's business.
    let mut toml = std::fs::read_to_string(&site.controller_config).expect("read chaosbot.toml");
    toml.push_str(&format!(
        "\n[[targets.host]]\nname = \"{HOST_TARGET}\"\nagent = \"{}\"\n",
        super::fixture::AGENT_NAME
    ));
    std::fs::write(&site.controller_config, toml).expect("write chaosbot.toml");
    let servers = spawn_servers_v6(
        &site.host,
        &site.host.ip().to_string(),
        Some(&site.host.ip6().to_string()),
    );
    site.start_agent().await;
    Some(NetSite {
        site,
        _servers: servers,
        run: 0,
    })
}

/// A [`NetSite`] beside a "container": a namespace of its own running [`spawn_servers`] on its
/// loopback, declared to the agent as process target `app` through `pid_file`; the host runs
/// the same servers on its own loopback.
pub struct ContainerSite {
    pub net: NetSite,
    pub container: super::netns::TestHost,
    pub pid_file: std::path::PathBuf,
    pub app: HostChild,
    pub host_lo: HostChild,
}

/// The loopback address both the container's and the host's servers listen on.
pub const LO: &str = "127.0.0.1";

/// A [`ContainerSite`], or `SKIP:` and None.
pub async fn container_site() -> Option<ContainerSite> {
    let container = match super::netns::TestHost::new() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return None;
        }
    };
    let pid_file = std::env::temp_dir().join(format!("chaosbot-ctr-{}.pid", container.name));
    let agent_toml = format!(
        "[[targets.process]]\nname = \"app\"\npid_file = \"{}\"\n",
        pid_file.display()
    );
    let net = net_site_with("", &agent_toml).await?;
    let app = spawn_servers(&container, LO);
    std::fs::write(&pid_file, app.pid().to_string()).expect("write the pid file");
    let host_lo = spawn_servers(&net.site.host, LO);
    Some(ContainerSite {
        net,
        container,
        pid_file,
        app,
        host_lo,
    })
}

pub fn scope(ports: Option<&str>, protocol: &str, direction: &str) -> NetScope {
    NetScope {
        destinations: Vec::new(),
        ports: ports.map(str::to_string),
        protocol: protocol.into(),
        direction: direction.into(),
        interface: None,
        namespace_of: None,
    }
}

impl NetSite {
    /// Applies one host network fault; its fault id and run id.
    pub async fn apply(
        &mut self,
        action: NetAction,
        scope: NetScope,
    ) -> Result<(String, String), String> {
        self.apply_leased(action, scope, 60_000).await
    }

    /// [`Self::apply`] under a lease of `lease_ms` (never renewed here).
    pub async fn apply_leased(
        &mut self,
        action: NetAction,
        scope: NetScope,
        lease_ms: u64,
    ) -> Result<(String, String), String> {
        self.run += 1;
        let run_id = format!("r-net-{}", self.run);
        let fault_id = format!("{run_id}-cut");
        let req = Apply {
            run_id: run_id.clone(),
            epoch: 1,
            fault_id: fault_id.clone(),
            step: FaultStep {
                name: "cut".into(),
                target: HOST_TARGET.into(),
                duration: Duration::from_secs(30),
                fault: FaultSpec::HostNetwork { action, scope },
            },
            seed: 1,
            ttl_ms: 60_000,
            lease_ms,
            declare: None,
        };
        match self.site.api.apply(&req).await {
            Ok(_) => Ok((fault_id, run_id)),
            Err(r) => Err(format!("{}: {}", r.code(), r.text)),
        }
    }

    pub async fn revert(&self, fault_id: &str, run_id: &str) {
        self.site
            .api
            .revert(
                fault_id,
                &Revert {
                    run_id: run_id.into(),
                    epoch: 1,
                },
            )
            .await
            .expect("revert");
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.site.host.ip(), port))
    }

    /// The host's IPv6 address at `port` (the servers answer UDP echoes there too).
    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.site.host.ip6(), port))
    }
}

/// The test servers ([`SERVE_PY`]) on `ip` inside another namespace, e.g. a container's.
pub fn spawn_servers(host: &super::netns::TestHost, ip: &str) -> HostChild {
    spawn_servers_v6(host, ip, None)
}

/// [`spawn_servers`], with the UDP echo on `ip6` too when given.
pub fn spawn_servers_v6(host: &super::netns::TestHost, ip: &str, ip6: Option<&str>) -> HostChild {
    let mut py = Command::new("python3");
    py.args([
        "-c",
        SERVE_PY,
        ip,
        &OTHER_PORT.to_string(),
        &UDP_PORT.to_string(),
        &SINK_PORT.to_string(),
    ]);
    py.args(ip6);
    let servers = host.spawn(&py).expect("spawn the test servers");
    assert!(
        wait_until(Duration::from_secs(10), || servers.log().contains("ready")),
        "servers did not start: {}",
        servers.log()
    );
    servers
}

/// Whether a TCP connection to `ip:port` made from inside namespace `ns` succeeds within
/// 700 ms.
pub fn connects_in(ns: &str, ip: &str, port: u16) -> bool {
    const CONNECT_PY: &str = "import socket, sys\n\
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.7).close()";
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", CONNECT_PY, ip])
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `bytes` to the sink at `to` as fast as TCP goes and waits for its count: the bytes
/// per second it received (bounded: 30 s).
pub fn send_rate(to: SocketAddr, bytes: usize) -> f64 {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect the sink");
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let chunk = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).expect("send to the sink");
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("the sink's count");
    let got: usize = answer.trim().parse().expect("a byte count");
    assert_eq!(got, bytes, "the sink received everything");
    bytes as f64 / started.elapsed().as_secs_f64()
}

/// A DNS server on argv[1]:53 (IPv4 or IPv6), over UDP and TCP, answering every A query
/// with 10.9.9.9 (other types: no answer), enough for the host's resolver.
const DNS_PY: &str = r#"
import socket, struct, sys, threading
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
def reply(q):
    end = 12
    while q[end] != 0:
        end += 1 + q[end]
    question, qtype = q[12:end + 5], q[end + 1:end + 3]
    if qtype == b"\x00\x01":
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 9, 9, 9])
        counts = b"\x00\x01\x00\x01\x00\x00\x00\x00"
    else:
        answer, counts = b"", b"\x00\x01\x00\x00\x00\x00\x00\x00"
    return q[:2] + b"\x81\x80" + counts + question + answer
def exactly(c, n):
    b = b""
    while len(b) < n:
        got = c.recv(n - len(b))
        if not got:
            return None
        b += got
    return b
def over_tcp():
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((sys.argv[1], 53)); t.listen(16)
    while True:
        c, _ = t.accept()
        c.settimeout(2)
        try:
            while True:
                n = exactly(c, 2)
                q = n and exactly(c, struct.unpack(">H", n)[0])
                if not q:
                    break
                a = reply(q)
                c.sendall(struct.pack(">H", len(a)) + a)
        except OSError:
            pass
        c.close()
threading.Thread(target=over_tcp, daemon=True).start()
s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, a = s.recvfrom(512)
    s.sendto(reply(q), a)
"#;

/// The address [`DNS_PY`] answers with.
pub const DNS_ANSWER: &str = "10.9.9.9";

/// A resolver for the host: the DNS server in the root namespace, on the controller's side
/// of the link, named in `/etc/netns/<host>/resolv.conf` (which `ip netns exec` puts in
/// place of /etc/resolv.conf); removed on Drop.
pub struct HostResolver {
    dir: std::path::PathBuf,
    server: std::net::IpAddr,
    _server: HostChild,
}

impl HostResolver {
    pub fn new(site: &Site) -> HostResolver {
        HostResolver::at(site, std::net::IpAddr::V4(site.host.controller_ip()))
    }

    /// The name server on `server`, an address of the controller's side of the link.
    pub fn at(site: &Site, server: std::net::IpAddr) -> HostResolver {
        let dir = std::path::Path::new("/etc/netns").join(&site.host.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<host>");
        let mut py = Command::new("python3");
        py.args(["-c", DNS_PY, &server.to_string()]);
        let child = site.host.spawn_outside(&py).expect("spawn the DNS server");
        assert!(
            wait_until(Duration::from_secs(10), || child.log().contains("ready")),
            "DNS server did not start: {}",
            child.log()
        );
        let resolver = HostResolver {
            dir,
            server,
            _server: child,
        };
        resolver.over_tcp(false);
        resolver
    }

    /// Makes the host's resolver ask over TCP (glibc's `use-vc`), or over UDP again.
    pub fn over_tcp(&self, tcp: bool) {
        let vc = if tcp { " use-vc" } else { "" };
        std::fs::write(
            self.dir.join("resolv.conf"),
            format!(
                "nameserver {}\noptions timeout:2 attempts:1{vc}\n",
                self.server
            ),
        )
        .expect("write the host's resolv.conf");
    }
}

impl Drop for HostResolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // /etc/netns itself, if nothing else is in it (another test's host may be).
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

/// An A query for `name` sent from inside the host to name server `server` (as
/// [`HostResolver::at`] names it) from UDP source port `port` every time, as a caching
/// resolver with a fixed port asks: the address answered, or None (no answer within 2 s,
/// refused, or no record).
pub fn lookup_from_port(
    site: &Site,
    server: std::net::IpAddr,
    name: &str,
    port: u16,
) -> Option<String> {
    const QUERY_PY: &str = r#"
import socket, struct, sys
server, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x01\x00\x01"
v6 = ":" in server
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", port)); s.settimeout(2); s.connect((server, 53)); s.send(q)
a = s.recv(512)
if struct.unpack(">H", a[6:8])[0] == 0:
    sys.exit(1)
print(".".join(str(b) for b in a[-4:]))
"#;
    let out = Command::new("ip")
        .args(["netns", "exec", &site.host.name, "python3", "-c", QUERY_PY])
        .arg(server.to_string())
        .arg(name)
        .arg(port.to_string())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `name` looked up by the host's resolver (glibc's, as any program there): the address, or
/// None when the lookup fails; and how long it took.
pub fn lookup_in(site: &Site, name: &str) -> (Option<String>, Duration) {
    const LOOKUP_PY: &str = "import socket, sys\nprint(socket.gethostbyname(sys.argv[1]))";
    let started = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &site.host.name,
            "python3",
            "-c",
            LOOKUP_PY,
            name,
        ])
        .output();
    let took = started.elapsed();
    match out {
        Ok(o) if o.status.success() => (
            Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
            took,
        ),
        _ => (None, took),
    }
}

/// Connects with a short timeout: Ok(time) or Err(kind and time).
pub fn connect(addr: SocketAddr) -> Result<Duration, (std::io::ErrorKind, Duration)> {
    let start = Instant::now();
    match TcpStream::connect_timeout(&addr, Duration::from_millis(700)) {
        Ok(_) => Ok(start.elapsed()),
        Err(e) => Err((e.kind(), start.elapsed())),
    }
}

/// Sends `n` numbered datagrams to the echo (paced, reading answers as they come, so no
/// socket buffer overflows) and counts the distinct answers.
pub fn udp_echoes(to: SocketAddr, n: u32) -> u32 {
    udp_echo_counts(to, n).0
}

/// A UDP socket on an ephemeral port of `to`'s family.
fn udp_socket_for(to: SocketAddr) -> UdpSocket {
    let any = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    UdpSocket::bind(any).expect("udp socket")
}

/// [`udp_echoes`]: the distinct answers, and every answer (duplicates included).
pub fn udp_echo_counts(to: SocketAddr, n: u32) -> (u32, u32) {
    let sock = udp_socket_for(to);
    let mut seen = HashSet::new();
    let mut total = 0u32;
    let mut buf = [0u8; 16];
    let mut take = |sock: &UdpSocket, seen: &mut HashSet<u32>, total: &mut u32| {
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            if len == 4 {
                seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                *total += 1;
            }
        }
    };
    sock.set_nonblocking(true).expect("nonblocking");
    for i in 0..n {
        sock.send_to(&i.to_be_bytes(), to).expect("send");
        take(&sock, &mut seen, &mut total);
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sock.set_nonblocking(false).expect("blocking");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match sock.recv_from(&mut buf) {
            Ok((4, _)) => {
                seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                total += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (seen.len() as u32, total)
}

/// Round trips of `n` echoes sent one at a time `gap` apart (each waits up to 2 s for its
/// answer); a lost one is left out.
pub fn udp_rtts(to: SocketAddr, n: u32, gap: Duration) -> Vec<Duration> {
    let sock = udp_socket_for(to);
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 16];
    for i in 0..n {
        let sent = Instant::now();
        sock.send_to(&i.to_be_bytes(), to).expect("send");
        let deadline = sent + Duration::from_secs(2);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((4, _)) if buf[..4] == i.to_be_bytes() => {
                    out.push(sent.elapsed());
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::thread::sleep(gap);
    }
    out
}

/// The `q` quantile (0 to 1) of `v`, in milliseconds.
pub fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return f64::NAN;
    }
    ms[((ms.len() - 1) as f64 * q).round() as usize]
}

/// Sends `n` numbered datagrams back to back (1 ms pause every 10, reading answers as they
/// come) and returns the numbers of the answers in the order they came.
pub fn udp_answer_order(to: SocketAddr, n: u32) -> Vec<u32> {
    let sock = udp_socket_for(to);
    let mut order = Vec::new();
    let mut buf = [0u8; 16];
    sock.set_nonblocking(true).expect("nonblocking");
    for i in 0..n {
        sock.send_to(&i.to_be_bytes(), to).expect("send");
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            if len == 4 {
                order.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
        }
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sock.set_nonblocking(false).expect("blocking");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && order.len() < n as usize {
        match sock.recv_from(&mut buf) {
            Ok((4, _)) => order.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    order
}

/// Round trips of `n` echoes sent `gap` apart without waiting for the answers (a reader
/// thread times them as they come), so a long delay does not stretch the run; answers that
/// do not come within 2 s of the last send are left out.
pub fn udp_rtts_pipelined(to: SocketAddr, n: u32, gap: Duration) -> Vec<Duration> {
    let sock = udp_socket_for(to);
    let reader = sock.try_clone().expect("udp socket clone");
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let start = Instant::now();
    let sent: Vec<std::sync::atomic::AtomicU64> = (0..n)
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let sent = std::sync::Arc::new(sent);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r_sent, r_done) = (sent.clone(), done.clone());
    let read = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 16];
        let mut quiet_since: Option<Instant> = None;
        while out.len() < n as usize {
            match reader.recv_from(&mut buf) {
                Ok((4, _)) => {
                    let at = start.elapsed().as_nanos() as u64;
                    let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if let Some(s) = r_sent.get(i) {
                        let s = s.load(std::sync::atomic::Ordering::Acquire);
                        out.push(Duration::from_nanos(at.saturating_sub(s)));
                    }
                }
                Ok(_) => {}
                Err(_) if r_done.load(std::sync::atomic::Ordering::Acquire) => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        out
    });
    for i in 0..n {
        let next = start + gap * i;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent[i as usize].store(
            start.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Release,
        );
        sock.send_to(&i.to_be_bytes(), to).expect("send");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    read.join().unwrap_or_default()
}
