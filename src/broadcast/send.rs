//! Datagrams leave in batches: one `sendmmsg` call carries up to [`BATCH`] of them, to as many
//! viewers. A frame of video is about nine packets for every viewer, so with hundreds watching
//! the loop has thousands of datagrams at once; a system call each was a third of the
//! fan-out's CPU (`perf`, issue 12). GSO cannot serve here: it splits one buffer for one
//! destination, and ours go to a different viewer each, under a different SRTP key.
//!
//! The payloads are sent from where str0m put them: nothing is copied on the way out.

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use str0m::net::Transmit;

/// Datagrams per system call: the kernel's `UIO_MAXIOV` allows 1024; past a few dozen the
/// saving per datagram is gone and a bigger batch only delays the first of them.
pub const BATCH: usize = 64;

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams it refused (full buffer, unreachable): lost, as UDP loses them.
    pub dropped: u64,
}

/// Datagrams waiting for the next system call.
pub struct Batch {
    queued: Vec<Transmit>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            queued: Vec::with_capacity(BATCH),
        }
    }
}

impl Batch {
    /// Queues `transmit`; true when the batch is full and should be flushed.
    pub fn push(&mut self, transmit: Transmit) -> bool {
        self.queued.push(transmit);
        self.queued.len() >= BATCH
    }

    /// Sends everything queued on `socket`, never blocking: what the socket will not take now
    /// is dropped and counted.
    pub fn flush(&mut self, socket: &impl AsRawFd) -> Sent {
        let mut sent = Sent::default();
        let mut start = 0;
        while start < self.queued.len() {
            let pending = &self.queued[start..];
            let slices: Vec<[IoSlice<'_>; 1]> = pending
                .iter()
                .map(|t| [IoSlice::new(&t.contents)])
                .collect();
            let addresses: Vec<Option<SockaddrStorage>> = pending
                .iter()
                .map(|t| Some(SockaddrStorage::from(t.destination)))
                .collect();
            // Made per call: nix's headers hold raw pointers, so the loop's future could not
            // keep them across an await, and a few hundred bytes per batch cost nothing.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(pending.len(), None);
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addresses,
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(results) => {
                    let mut taken = 0;
                    for r in results {
                        taken += 1;
                        sent.bytes += r.bytes as u64;
                    }
                    sent.packets += taken as u64;
                    start += taken;
                    if taken == 0 {
                        // Cannot happen for a non-empty batch; never spin on it.
                        sent.dropped += pending.len() as u64;
                        break;
                    }
                }
                // The socket's buffer is full: the rest would not fit either.
                Err(Errno::EAGAIN) => {
                    sent.dropped += pending.len() as u64;
                    break;
                }
                Err(Errno::EINTR) => {}
                // This first datagram cannot go (its viewer is unreachable, say): the others may.
                Err(_) => {
                    sent.dropped += 1;
                    start += 1;
                }
            }
        }
        self.queued.clear();
        sent
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};

    use str0m::net::{DatagramSend, Protocol};

    use super::*;

    fn transmit(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source: from,
            destination: to,
            contents: DatagramSend::from(payload.to_vec()),
        }
    }

    #[test]
    fn a_batch_reaches_every_receiver_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let receivers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut batch = Batch::default();
        // More than one system call's worth, spread over three viewers.
        let count = BATCH + 10;
        for i in 0..count {
            let to = receivers[i % 3].local_addr().unwrap();
            if batch.push(transmit(from, to, &(i as u32).to_be_bytes())) {
                let sent = batch.flush(&sender);
                assert_eq!(sent.packets, BATCH as u64);
            }
        }
        let sent = batch.flush(&sender);
        assert_eq!(
            sent,
            Sent {
                packets: 10,
                bytes: 40,
                dropped: 0
            }
        );
        assert!(batch.is_empty());
        let mut buf = [0u8; 16];
        for (r, socket) in receivers.iter().enumerate() {
            socket.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            while let Ok(n) = socket.recv(&mut buf) {
                got.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
            }
            let expected: Vec<u32> = (0..count as u32).filter(|i| *i as usize % 3 == r).collect();
            assert_eq!(got, expected, "receiver {r}");
        }
    }

    #[test]
    fn an_unreachable_viewer_costs_its_own_datagram_only() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let mut batch = Batch::default();
        // An IPv6 destination on an IPv4 socket: the kernel refuses that one message.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        batch.push(transmit(from, v6, b"lost"));
        batch.push(transmit(from, receiver.local_addr().unwrap(), b"kept"));
        let sent = batch.flush(&sender);
        assert_eq!((sent.packets, sent.dropped), (1, 1));
        let mut buf = [0u8; 8];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }
}
