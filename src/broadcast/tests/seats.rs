//! Seats on the virtual clock: a viewer counts once connected, the last seat goes to the first
//! to connect, and pending offers hold nothing past their few seconds.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::ms;
use super::party::Party;
use crate::broadcast::seats::SeatLimits;
use crate::broadcast::{BroadcastError, CONNECT_TIMEOUT, VIEWER_TIMEOUT};

fn limits(max_viewers: usize, max_pending: usize) -> SeatLimits {
    SeatLimits {
        max_viewers,
        max_pending,
        max_pending_per_address: max_pending,
    }
}

#[test]
fn two_viewers_for_the_last_seat_the_second_to_connect_is_closed_and_not_counted() {
    let mut party = Party::with_seats(limits(1, 8));
    let a = party.join();
    let b = party.join();
    assert_eq!(
        party.seats.counts(),
        (0, 2),
        "answered offers are pending: neither is seated yet"
    );
    party.advance(ms(500));
    let seated: Vec<usize> = [a, b].into_iter().filter(|&n| party.holds(n)).collect();
    assert_eq!(seated.len(), 1, "one session is left");
    let (winner, loser) = if seated[0] == a { (a, b) } else { (b, a) };
    assert_eq!(party.stats.connected.load(Ordering::Relaxed), 1);
    assert_eq!(party.stats.viewers.load(Ordering::Relaxed), 1);
    assert_eq!(party.stats.refused_at_connect.load(Ordering::Relaxed), 1);
    assert_eq!(party.seats.counts(), (1, 0), "the loser holds nothing");
    assert!(
        party.clients[loser].closed_at.is_some(),
        "the loser was told: its session got a DTLS close_notify"
    );
    assert!(party.clients[winner].closed_at.is_none());

    // The winner gets media; the loser none.
    party.frame(true, 3);
    party.advance(ms(100));
    assert!(
        !party.clients[winner].video.is_empty(),
        "the seated viewer watches"
    );
    assert!(party.clients[loser].video.is_empty());
}

#[test]
fn pending_offers_make_the_party_busy_never_full_and_expire_for_a_real_viewer() {
    let mut party = Party::with_seats(limits(2, 3));
    let joined = party.now;
    let squat: Vec<usize> = (0..3).map(|_| party.join_offline()).collect();
    let newcomer: IpAddr = [10, 9, 9, 9].into();
    match party.seats.reserve(newcomer) {
        Err(e @ BroadcastError::Busy) => {
            assert!(!e.to_string().contains("full"), "{e}")
        }
        other => panic!("3 pending of 3 allowed: expected busy, got {other:?}"),
    }
    party.advance_to(joined + CONNECT_TIMEOUT);
    assert!(squat.iter().all(|&n| !party.holds(n)), "expired");
    assert_eq!(party.seats.counts(), (0, 0));
    assert!(
        CONNECT_TIMEOUT * 2 < VIEWER_TIMEOUT,
        "connecting is cut shorter than silence"
    );

    let a = party.connect();
    let b = party.connect();
    assert_eq!(party.seats.counts(), (2, 0));
    assert_eq!(party.stats.connected.load(Ordering::Relaxed), 2);
    match party.seats.reserve(newcomer) {
        Err(e @ BroadcastError::Full(2)) => {
            assert_eq!(e.to_string(), "the party is full (2 viewers)")
        }
        other => panic!("two seated of two: expected full, got {other:?}"),
    }
    let id = party.clients[a].id;
    let now = party.now;
    assert!(party.engine.leave(now, id));
    assert_eq!(party.seats.counts(), (1, 0), "leaving frees the seat");
    assert!(party.holds(b));
    assert!(party.seats.reserve(newcomer).is_ok());
}
