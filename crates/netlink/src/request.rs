//! The blocking request socket: one request at a time, answers matched by
//! sequence number, read until the kernel's verdict (ack, error or end of
//! dump). Every receive is bounded by [`TIMEOUT`], and so is the whole
//! exchange, so no answer, or a stream of unrelated ones, cannot hold the
//! caller longer.

use std::io;
use std::time::Instant;

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NlaBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_MULTIPART,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::TIMEOUT;

/// A NETLINK_ROUTE socket for requests, in the namespace of the thread
/// that opened it.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let socket = Socket::new(NETLINK_ROUTE)?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(TIMEOUT))?;
        Ok(Netlink {
            socket,
            seq: 0,
            tx: Vec::new(),
            // Dumps come in datagrams of at most 32 KiB.
            rx: vec![0; 64 * 1024],
        })
    }

    /// Sends `message` with `flags` and reads the answers, handing every
    /// message but the verdict to `each` (its type and body). The outer error
    /// is the socket's; the inner one the kernel's errno for the request.
    pub(crate) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<Result<(), i32>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        self.tx.resize(packet.buffer_len(), 0);
        packet.serialize(&mut self.tx);
        // Port 0 is the kernel.
        self.socket.send_to(&self.tx, &SocketAddr::new(0, 0), 0)?;

        let started = Instant::now();
        loop {
            let n = match self.socket.recv(&mut &mut self.rx[..], 0) {
                Ok(n) => n.min(self.rx.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(no_answer()),
                Err(e) => return Err(e),
            };
            if let Some(verdict) = absorb(&self.rx[..n], self.seq, &mut each) {
                return Ok(verdict);
            }
            if started.elapsed() >= TIMEOUT {
                return Err(no_answer());
            }
        }
    }
}

fn no_answer() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer from the kernel within {TIMEOUT:?}"),
    )
}

/// The kernel's errno as an error.
pub(crate) fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub body: &'a [u8],
}

/// The messages of one datagram, in order, up to the first one whose length
/// is broken (shorter than a header, or longer than what is left).
pub(crate) fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let buf = NetlinkBuffer::new_checked(rest).ok()?;
        let message = Message {
            kind: buf.message_type(),
            flags: buf.flags(),
            seq: buf.sequence_number(),
            body: buf.payload(),
        };
        let next = (buf.length() as usize).next_multiple_of(4);
        rest = rest.get(next..).unwrap_or_default();
        Some(message)
    })
}

/// The attributes of a message body (after its fixed header), up to the
/// first one whose length is broken.
pub(crate) fn attributes(body: &[u8]) -> impl Iterator<Item = NlaBuffer<&[u8]>> {
    NlasIterator::new(body).map_while(Result::ok)
}

/// One datagram of answers to request `seq`: hands every message but the
/// verdict to `each`; `Some` with the kernel's verdict once the answer is
/// complete (ack, error, end of dump, or a single answer), `None` when more
/// is to come.
pub(crate) fn absorb(
    datagram: &[u8],
    seq: u32,
    mut each: impl FnMut(u16, &[u8]),
) -> Option<Result<(), i32>> {
    for m in messages(datagram).filter(|m| m.seq == seq) {
        match m.kind {
            NLMSG_ERROR => {
                // Too short to carry an errno: no verdict to trust.
                let code = ErrorBuffer::new_checked(m.body)
                    .map(|b| b.code().map_or(0, |c| c.get()))
                    .unwrap_or(-libc::EIO);
                return Some(verdict(code));
            }
            NLMSG_DONE => {
                // Older kernels end a dump with an empty NLMSG_DONE.
                let code = DoneBuffer::new_checked(m.body).map_or(0, |b| b.code());
                return Some(verdict(code));
            }
            NLMSG_NOOP | NLMSG_OVERRUN => {}
            kind => {
                each(kind, m.body);
                if m.flags & NLM_F_MULTIPART == 0 {
                    return Some(Ok(()));
                }
            }
        }
    }
    None
}

/// The kernel sends 0 or a negated errno; anything else (a positive number,
/// or i32::MIN, which has no negation) is no errno at all.
fn verdict(code: i32) -> Result<(), i32> {
    match code {
        0 => Ok(()),
        c => Err(c.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EIO)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A netlink message as the kernel frames it.
    pub(crate) fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    #[test]
    fn a_dump_is_read_until_its_end_skipping_other_requests() {
        let multi = NLM_F_MULTIPART;
        let mut first = message(libc::RTM_NEWROUTE, multi, 7, &[1; 12]);
        first.extend(message(libc::RTM_NEWROUTE, multi, 6, &[2; 12]));
        let mut bodies = Vec::new();
        assert_eq!(absorb(&first, 7, |k, b| bodies.push((k, b[0]))), None);
        let mut second = message(libc::RTM_NEWROUTE, multi, 7, &[3; 13]);
        second.extend(message(NLMSG_DONE, multi, 7, &0i32.to_ne_bytes()));
        second.extend(message(libc::RTM_NEWROUTE, multi, 7, &[4; 12]));
        assert_eq!(
            absorb(&second, 7, |k, b| bodies.push((k, b[0]))),
            Some(Ok(()))
        );
        assert_eq!(
            bodies,
            vec![(libc::RTM_NEWROUTE, 1), (libc::RTM_NEWROUTE, 3)]
        );
    }

    #[test]
    fn errors_and_failed_dumps_carry_the_errno() {
        let nack = message(NLMSG_ERROR, 0, 1, &(-libc::EEXIST).to_ne_bytes());
        assert_eq!(absorb(&nack, 1, |_, _| {}), Some(Err(libc::EEXIST)));
        let ack = message(NLMSG_ERROR, 0, 1, &[0; 20]);
        assert_eq!(absorb(&ack, 1, |_, _| {}), Some(Ok(())));
        let failed = message(
            NLMSG_DONE,
            NLM_F_MULTIPART,
            1,
            &(-libc::EINTR).to_ne_bytes(),
        );
        assert_eq!(absorb(&failed, 1, |_, _| {}), Some(Err(libc::EINTR)));
        let empty_done = message(NLMSG_DONE, NLM_F_MULTIPART, 1, &[]);
        assert_eq!(absorb(&empty_done, 1, |_, _| {}), Some(Ok(())));
        for odd in [i32::MIN, 5] {
            let m = message(NLMSG_ERROR, 0, 1, &odd.to_ne_bytes());
            assert_eq!(absorb(&m, 1, |_, _| {}), Some(Err(libc::EIO)), "{odd}");
        }
        let short = message(NLMSG_ERROR, 0, 1, &[0xff, 0xff]);
        assert_eq!(absorb(&short, 1, |_, _| {}), Some(Err(libc::EIO)));
    }

    #[test]
    fn a_message_with_a_broken_length_ends_the_datagram() {
        let mut m = message(libc::RTM_NEWLINK, NLM_F_MULTIPART, 1, &[0; 16]);
        let good = m.clone();
        m[0] = 8; // shorter than its own header
        m.extend(&good);
        assert_eq!(messages(&m).count(), 0);
        let mut long = good.clone();
        long[0] = 200; // longer than the datagram
        assert_eq!(messages(&long).count(), 0);
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        let mut two = good.clone();
        two.extend(&good);
        two.extend([9, 9, 9]);
        assert_eq!(messages(&two).count(), 2);
    }

    #[test]
    fn attributes_end_at_the_first_broken_length() {
        // (len 8, type 1, 4 bytes), (len 2: shorter than its header), (len 8, type 2).
        let body = [8u8, 0, 1, 0, 1, 2, 3, 4, 2, 0, 2, 0, 8, 0, 2, 0, 0, 0, 0, 0];
        let kinds: Vec<u16> = attributes(&body).map(|a| a.kind()).collect();
        assert_eq!(kinds, vec![1]);
    }
}
