//! Just enough netfilter netlink for packet shaping without the kernel's sch_netem: a socket,
//! messages with (nested) attributes, and the two requests the `nft` tool cannot make for us:
//! binding an nfnetlink_queue (and its verdicts, in [`super::shaper`]), and one nf_tables rule
//! holding the `NFQUEUE` x_tables target in a chain of chaosbot's own table.
//!
//! Layouts are the kernel's UAPI: `linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `nfnetlink_queue.h`, `nf_tables.h`, `nf_tables_compat.h` and `xt_NFQUEUE.h`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const NLMSG_ERROR: u16 = 2;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

pub const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;
/// `NFQ_FLAG_BYPASS`: with no program bound to the queue, packets pass (a dead agent cuts
/// nothing off).
const NFQ_FLAG_BYPASS: u16 = 0x1;

/// A netfilter netlink socket in the calling thread's network namespace.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl with its family set binds to a kernel-chosen port id.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 1 })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Asks for a receive buffer of `bytes` (as root past the system maximum), so a burst of
    /// queued packets is not lost between two reads.
    pub fn set_receive_buffer(&self, bytes: i32) {
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: setsockopt with an int option value of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    self.raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&bytes as *const i32).cast(),
                    4,
                )
            };
            if rc == 0 {
                return;
            }
        }
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (port id 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and addr are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one datagram (one or more messages); `wait: false` returns WouldBlock at once
    /// when nothing is there.
    pub fn recv(&self, buf: &mut [u8], wait: bool) -> io::Result<usize> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(self.raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends `msg` (built with NLM_F_ACK and sequence `seq`) and waits for the kernel's
    /// answer to it: Ok for an acknowledgement, the errno it carries otherwise.
    pub fn request(&mut self, msg: &[u8], seq: u32) -> io::Result<()> {
        self.send(msg)?;
        let mut buf = vec![0u8; 16384];
        // Bounded: the answer comes at once; anything else read meanwhile is skipped.
        for _ in 0..64 {
            let n = self.recv(&mut buf, true)?;
            for m in messages(&buf[..n]) {
                if m.kind == NLMSG_ERROR && m.seq == seq {
                    let code = m
                        .payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(-libc::EPROTO);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the kernel did not answer the netlink request",
        ))
    }
}

/// One netfilter netlink message being built: the header, the `nfgenmsg`, then attributes.
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    pub fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn attr_str(&mut self, kind: u16, s: &str) -> &mut Msg {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    pub fn attr_be32(&mut self, kind: u16, v: u32) -> &mut Msg {
        self.attr(kind, &v.to_be_bytes())
    }

    pub fn nest(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Msg {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end();
        }
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

/// A message read back: its type, sequence and what follows its header.
pub struct Received<'a> {
    pub kind: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of one received datagram.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Received<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let m = Received {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = &rest[align4(len).min(rest.len())..];
        Some(m)
    })
}

/// The attributes after a netfilter message's `nfgenmsg`: (type without flags, data).
pub fn attributes(payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = payload.get(NFGENMSG_LEN..).unwrap_or_default();
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let data = &rest[4..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some((kind, data))
    })
}

/// Adds, in one nf_tables transaction, the rule `NFQUEUE --queue-num queue --queue-bypass`
/// to `chain` of table `table` (family `ip` or `ip6`), in the calling thread's namespace.
pub fn add_queue_rule(family: &str, table: &str, chain: &str, queue: u16) -> io::Result<()> {
    let nfproto: u8 = match family {
        "ip" => libc::NFPROTO_IPV4 as u8,
        "ip6" => libc::NFPROTO_IPV6 as u8,
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    };
    let mut sock = Socket::open()?;
    let begin_seq = sock.next_seq();
    let rule_seq = sock.next_seq();
    let end_seq = sock.next_seq();
    let mut batch = Msg::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        begin_seq,
        libc::AF_UNSPEC as u8,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish();
    // struct xt_NFQ_info_v3 { u16 queuenum; u16 queues_total; u16 flags; }, in host order,
    // padded to x_tables' 8-byte alignment.
    let mut info = Vec::with_capacity(8);
    info.extend_from_slice(&queue.to_ne_bytes());
    info.extend_from_slice(&1u16.to_ne_bytes());
    info.extend_from_slice(&NFQ_FLAG_BYPASS.to_ne_bytes());
    info.extend_from_slice(&[0, 0]);
    let mut rule = Msg::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
        rule_seq,
        nfproto,
        0,
    );
    rule.attr_str(NFTA_RULE_TABLE, table)
        .attr_str(NFTA_RULE_CHAIN, chain)
        .nest(NFTA_RULE_EXPRESSIONS)
        .nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "target")
        .nest(NFTA_EXPR_DATA)
        .attr_str(NFTA_TARGET_NAME, "NFQUEUE")
        .attr_be32(NFTA_TARGET_REV, 3)
        .attr(NFTA_TARGET_INFO, &info);
    batch.extend_from_slice(&rule.finish());
    batch.extend_from_slice(
        &Msg::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end_seq,
            libc::AF_UNSPEC as u8,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish(),
    );
    sock.request(&batch, rule_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_attributes_read_back_what_was_built() {
        let mut m = Msg::new(0x0301, NLM_F_REQUEST, 7, 0, 5);
        m.attr_be32(2, 0xdead_beef).nest(3).attr_str(1, "ab").end();
        let buf = m.finish();
        assert_eq!(buf.len() % 4, 0);
        let got: Vec<_> = messages(&buf).collect();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].kind, got[0].seq), (0x0301, 7));
        let attrs: Vec<_> = attributes(got[0].payload).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (2, &0xdead_beef_u32.to_be_bytes()[..]));
        assert_eq!(attrs[1].0, 3);
        // The nested attribute holds "ab\0" padded to 4 bytes.
        assert_eq!(attrs[1].1, &[7, 0, 1, 0, b'a', b'b', 0, 0][..]);
    }
}
