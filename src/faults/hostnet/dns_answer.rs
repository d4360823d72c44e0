//! The agent's stand-in resolver for `dns` with an `answer`: the fault's nftables rule
//! redirects the host's queries for the named names (UDP, to any resolver, over IPv4 or
//! IPv6) to these sockets on the host's loopback (127.0.0.1 and ::1, one port), which answer
//! each with the given address (an A or AAAA record with a TTL of 0, so no cache keeps it
//! past the revert) and anything else with REFUSED. Other names never reach them: they go to
//! the host's own resolver as before.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_REFUSED: u8 = 5;

/// The query's name (lowercased, without the trailing dot), type and the end of its
/// question section; None when it is not a one-question query.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers do not occur in a query's question.
        if len > 63 {
            return None;
        }
        let label = q.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// The answer to query `q`: `answer` for a query of one of `names` of the address's type, no
/// record for another type of such a name, REFUSED otherwise.
pub fn respond(q: &[u8], names: &[String], answer: IpAddr) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(q)?;
    if end > q.len() {
        return None;
    }
    let mut r = q[..end].to_vec();
    // QR, the query's opcode and RD, RA; counts: one question, no authority or additional.
    r[2] = 0x80 | (q[2] & 0x79);
    r[3] = 0x80;
    r[8..12].fill(0);
    if !names.contains(&name) {
        r[3] |= RCODE_REFUSED;
        r[6..8].fill(0);
        return Some(r);
    }
    let rdata: Option<Vec<u8>> = match (answer, qtype) {
        (IpAddr::V4(a), TYPE_A) => Some(a.octets().to_vec()),
        (IpAddr::V6(a), TYPE_AAAA) => Some(a.octets().to_vec()),
        _ => None,
    };
    match rdata {
        None => r[6..8].copy_from_slice(&0u16.to_be_bytes()),
        Some(data) => {
            r[6..8].copy_from_slice(&1u16.to_be_bytes());
            r.extend_from_slice(&[0xc0, 0x0c]); // the name: a pointer to the question's
            r.extend_from_slice(&qtype.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: nothing caches it
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(&data);
        }
    }
    Some(r)
}

/// Serves every one of `sockets` (one per address family) until the task is aborted.
pub async fn serve_all(sockets: Vec<UdpSocket>, names: Vec<String>, answer: IpAddr) {
    let names = Arc::new(names);
    let mut each = tokio::task::JoinSet::new();
    for sock in sockets {
        each.spawn(serve(Arc::new(sock), names.clone(), answer));
    }
    // Aborting this task drops the set, which aborts the sockets' tasks.
    while each.join_next().await.is_some() {}
}

/// Serves `sock` until the task is aborted.
async fn serve(sock: Arc<UdpSocket>, names: Arc<Vec<String>>, answer: IpAddr) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from): (usize, SocketAddr) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "the dns answer socket failed; the named lookups now fail");
                return;
            }
        };
        if let Some(r) = respond(&buf[..n], &names, answer)
            && let Err(e) = sock.send_to(&r, from).await
        {
            debug!(error = %e, "cannot send a dns answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as resolvers send it: id 0xbeef, RD, one question.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&crate::spec::model::dns_wire_name(name));
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn a_named_name_gets_the_answer_and_others_are_refused() {
        let names = vec!["db.internal".to_string()];
        let answer: IpAddr = "10.9.9.77".parse().unwrap();
        let q = query("DB.internal", TYPE_A);
        let r = respond(&q, &names, answer).unwrap();
        assert_eq!(&r[..2], &[0xbe, 0xef], "same id");
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 9, 9, 77]);
        assert_eq!(&r[r.len() - 10..r.len() - 6], &[0, 0, 0, 0], "TTL 0");

        let r = respond(&query("db.internal", TYPE_AAAA), &names, answer).unwrap();
        assert_eq!((r[3] & 0x0f, r[7]), (0, 0), "no AAAA record, no error");

        let r = respond(&query("cache.internal", TYPE_A), &names, answer).unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);

        assert!(respond(&q[..5], &names, answer).is_none(), "too short");
        let mut not_query = q.clone();
        not_query[2] |= 0x80;
        assert!(respond(&not_query, &names, answer).is_none(), "a response");
    }
}
