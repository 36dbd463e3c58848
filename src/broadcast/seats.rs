//! Seats: who counts against `--max-viewers`, and the offers still connecting.
//!
//! An answered offer costs us an `Rtc` and a timer, but it is only a promise: a script can
//! send hundreds whose ICE never completes. So a viewer takes a seat only once its ICE and
//! DTLS complete ([`Ticket::take_seat`]); until then its offer is *pending*, and pending
//! offers have caps of their own, per address and in total, and a short life
//! ([`super::CONNECT_TIMEOUT`]). A squatter can then hold at most its address's few pending
//! offers for a few seconds, and never a seat; the party says it is full only when its seats
//! are.
//!
//! Two offers may be pending for the last seat: the first to connect takes it, the second is
//! closed when it connects (DTLS close_notify) and never counted.
//!
//! A [`Ticket`] is what one session holds: a pending place, then perhaps a seat. Dropping it
//! gives back whatever it holds, so no path that ends a session (leave, timeout, a refused
//! handover, the fan-out stopping) can leak a place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::BroadcastError;

/// Default cap on offers answered but not yet connected, in total.
pub const DEFAULT_MAX_PENDING: usize = 32;
/// Default cap on pending offers from one address (an IPv6 /64 counts as one address).
pub const DEFAULT_MAX_PENDING_PER_ADDRESS: usize = 4;

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatLimits {
    /// Connected viewers at most (`--max-viewers`).
    pub max_viewers: usize,
    /// Pending offers at most, in total.
    pub max_pending: usize,
    /// Pending offers at most from one address.
    pub max_pending_per_address: usize,
}

/// The seats of one party, shared by the web side (which reserves) and the engine (which
/// seats and frees). A std `Mutex`: every section is a few integer updates, never held across
/// an `.await`.
#[derive(Debug)]
pub struct Seats {
    limits: SeatLimits,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seated: usize,
    pending: usize,
    /// Pending offers by address key (see [`address_key`]); absent when none.
    by_address: HashMap<IpAddr, usize>,
}

impl Seats {
    /// Empty seats with `limits`.
    pub fn new(limits: SeatLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Connected viewers (seated) and pending offers, now.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.seated, inner.pending)
    }

    /// A pending place for an offer from `from`, or why not: the party is full (every seat
    /// taken), too many offers are connecting, or this address has too many connecting.
    pub fn reserve(self: &Arc<Self>, from: IpAddr) -> Result<Ticket, BroadcastError> {
        let key = address_key(from);
        let mut inner = self.lock();
        if inner.seated >= self.limits.max_viewers {
            return Err(BroadcastError::Full(self.limits.max_viewers));
        }
        let mine = inner.by_address.get(&key).copied().unwrap_or(0);
        if mine >= self.limits.max_pending_per_address {
            return Err(BroadcastError::TooManyFromAddress(
                self.limits.max_pending_per_address,
            ));
        }
        if inner.pending >= self.limits.max_pending {
            return Err(BroadcastError::Busy);
        }
        inner.pending += 1;
        *inner.by_address.entry(key).or_default() += 1;
        drop(inner);
        Ok(Ticket {
            seats: self.clone(),
            key,
            seated: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The sections cannot panic halfway (integer updates): a poisoned lock holds
        // consistent counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn release_pending(&mut self, key: IpAddr) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(n) = self.by_address.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&key);
            }
        }
    }
}

/// One session's place: pending, then perhaps seated. Dropping it frees what it holds.
#[derive(Debug)]
pub struct Ticket {
    seats: Arc<Seats>,
    key: IpAddr,
    seated: bool,
}

impl Ticket {
    /// The session connected: its pending place becomes a seat, or, when every seat was
    /// taken meanwhile, false (it keeps its pending place until dropped).
    pub fn take_seat(&mut self) -> bool {
        if self.seated {
            return true;
        }
        let mut inner = self.seats.lock();
        if inner.seated >= self.seats.limits.max_viewers {
            return false;
        }
        inner.release_pending(self.key);
        inner.seated += 1;
        self.seated = true;
        true
    }

    /// Whether it holds a seat.
    pub fn is_seated(&self) -> bool {
        self.seated
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.seats.lock();
        if self.seated {
            inner.seated = inner.seated.saturating_sub(1);
        } else {
            inner.release_pending(self.key);
        }
    }
}

/// What counts as one address: an IPv4 address, or an IPv6 /64 (one subscriber's prefix:
/// anyone holding one can pick among 2^64 addresses).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(max_viewers: usize, max_pending: usize, per_address: usize) -> Arc<Seats> {
        Seats::new(SeatLimits {
            max_viewers,
            max_pending,
            max_pending_per_address: per_address,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_cap_of_pending_offers_and_others_still_get_theirs() {
        let seats = seats(10, 8, 2);
        let a: Vec<Ticket> = (0..2)
            .map(|_| seats.reserve(ip("10.0.0.1")).unwrap())
            .collect();
        let third = seats.reserve(ip("10.0.0.1")).unwrap_err();
        assert_eq!(
            third.to_string(),
            "too many offers from your address are connecting (at most 2); try again in a few seconds"
        );
        let b = seats
            .reserve(ip("10.0.0.2"))
            .expect("another address is not refused");
        assert_eq!(seats.counts(), (0, 3));
        drop(a);
        assert_eq!(seats.counts(), (0, 1));
        let _again = seats.reserve(ip("10.0.0.1")).expect("freed by the drop");
        drop(b);
    }

    #[test]
    fn pending_offers_never_make_the_party_full() {
        let seats = seats(2, 3, 10);
        let pending: Vec<Ticket> = (0..3)
            .map(|_| seats.reserve(ip("10.0.0.1")).unwrap())
            .collect();
        let refused = seats.reserve(ip("10.0.0.9")).unwrap_err();
        assert!(matches!(refused, BroadcastError::Busy), "{refused}");
        assert!(!refused.to_string().contains("full"), "{refused}");
        drop(pending);
        assert_eq!(seats.counts(), (0, 0));
    }

    #[test]
    fn the_second_to_connect_for_the_last_seat_gets_none_and_is_not_counted() {
        let seats = seats(1, 8, 8);
        let mut first = seats.reserve(ip("10.0.0.1")).unwrap();
        let mut second = seats.reserve(ip("10.0.0.2")).unwrap();
        assert_eq!(
            seats.counts(),
            (0, 2),
            "both pending: the party is not full yet"
        );
        assert!(first.take_seat());
        assert_eq!(seats.counts(), (1, 1));
        assert!(!second.take_seat(), "the last seat went to the first");
        assert_eq!(
            seats.counts(),
            (1, 1),
            "the second is not counted as seated"
        );
        drop(second);
        assert_eq!(seats.counts(), (1, 0));
        let full = seats.reserve(ip("10.0.0.3")).unwrap_err();
        assert_eq!(full.to_string(), "the party is full (1 viewers)");
        drop(first);
        assert_eq!(seats.counts(), (0, 0));
        seats.reserve(ip("10.0.0.3")).expect("a seat is free again");
    }

    #[test]
    fn an_ipv6_prefix_is_one_address_and_a_mapped_ipv4_is_its_ipv4() {
        let seats = seats(10, 10, 1);
        let _a = seats.reserve(ip("2001:db8::1")).unwrap();
        assert!(seats.reserve(ip("2001:db8::ffff:1")).is_err(), "same /64");
        let _b = seats.reserve(ip("2001:db8:0:1::1")).expect("another /64");
        let _c = seats.reserve(ip("192.0.2.7")).unwrap();
        assert!(
            seats.reserve(ip("::ffff:192.0.2.7")).is_err(),
            "the same IPv4 client"
        );
    }
}
