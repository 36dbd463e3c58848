//! The engine on a virtual clock: keyframe merging, where a new viewer's video starts, paced
//! replays and reaping, with real str0m viewers and no sockets (see `party.rs`).
//!
//! Each test states the timing it relies on as an assertion, so a change of a constant that
//! invalidates a scenario fails loudly instead of testing something else.

mod adaptive;
mod party;
mod renditions;
mod repair;
mod seats;

use std::sync::atomic::Ordering;
use std::time::Duration;

use party::Party;

use super::keyframes::{
    GOP_REPLAY_AGE, KEYFRAME_IN_FLIGHT, KEYFRAME_INTERVAL, START_REQUEST_GRACE, URGENT_AFTER_START,
    URGENT_INTERVAL,
};
use super::viewer::{MEDIA_GRACE, MEDIA_SILENCE, REPLAY_BURST, REPLAY_TICK};
use super::{CONNECT_TIMEOUT, VIEWER_TIMEOUT};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn requests_within_the_interval_force_one_keyframe_and_the_pending_one_on_reopening() {
    let mut party = Party::new();
    let t0 = party.now;
    for _ in 0..5 {
        party.video_lost();
        party.advance(ms(100));
    }
    assert_eq!(party.keyframes_asked, [t0], "merged into the first");
    assert_eq!(party.requested(), 5);
    assert_eq!(party.forced(), 1);

    party.advance_to(t0 + KEYFRAME_INTERVAL);
    assert_eq!(
        party.keyframes_asked,
        [t0, t0 + KEYFRAME_INTERVAL],
        "the pending request is forced the moment the window reopens"
    );
    party.advance(KEYFRAME_INTERVAL * 3);
    assert_eq!(party.forced(), 2, "and only once");
}

#[test]
fn an_established_viewers_keyframe_request_is_merged_into_the_window() {
    let mut party = Party::new();
    let a = party.connect();
    let connected = party.clients[a].connected_at.unwrap();
    assert_eq!(
        party.keyframes_asked,
        [connected],
        "nothing cached: forced for it"
    );
    party.advance(MEDIA_GRACE);
    party.frame(true, 3);
    party.frame(false, 2);
    party.advance_to(connected + URGENT_AFTER_START);
    let forced_at = party.now;
    party.video_lost(); // The pipeline's own request opens a window.
    assert_eq!(party.keyframes_asked, [connected, forced_at]);

    party.advance(ms(300));
    party.clients[a].request_keyframe(); // A PLI, as after loss.
    party.advance(ms(100));
    assert_eq!(party.requested(), 3, "the PLI reached the engine");
    assert_eq!(party.forced(), 2, "inside the window: pending");
    party.advance_to(forced_at + KEYFRAME_INTERVAL);
    assert_eq!(
        party.keyframes_asked,
        [connected, forced_at, forced_at + KEYFRAME_INTERVAL]
    );
}

#[test]
fn a_new_viewers_keyframe_request_waits_only_the_short_window() {
    let mut party = Party::new();
    let a = party.connect();
    let connected = party.clients[a].connected_at.unwrap();
    party.advance(MEDIA_GRACE);
    party.frame(true, 3);
    party.advance_to(connected + MEDIA_GRACE + START_REQUEST_GRACE + ms(50));
    // The pipeline lagged: a keyframe for everyone, pending until the 1 s window reopens.
    party.video_lost();
    assert_eq!(party.keyframes_asked, [connected]);
    // The new viewer's picture froze: it may not wait that long.
    party.clients[a].request_keyframe();
    party.advance(ms(100));
    assert_eq!(party.requested(), 3, "the PLI reached the engine");
    let forced: Vec<_> = party.keyframes_asked.clone();
    assert_eq!(forced.len(), 2, "{forced:?}");
    assert!(URGENT_INTERVAL < forced[1] - connected);
    assert!(
        forced[1] < connected + KEYFRAME_INTERVAL,
        "served at once, not when the 1 s window reopens"
    );
    assert!(URGENT_AFTER_START > forced[1] - connected);
}

#[test]
fn the_keyframe_request_a_browser_sends_as_its_video_starts_costs_no_keyframe() {
    let mut party = Party::new();
    let keyframe = party.frame(true, 3);
    party.frame(false, 2);
    party.advance(ms(50));
    let a = party.connect(); // A young GOP: replayed, keyframe first.
    party.advance(MEDIA_GRACE + ms(1));
    party.clients[a].request_keyframe(); // Chromium's PLI at the start of its video.
    party.advance(ms(150));
    assert!(ms(150) + MEDIA_GRACE < START_REQUEST_GRACE);
    assert!(
        party.keyframes_asked.is_empty(),
        "{:?}",
        party.keyframes_asked
    );
    assert_eq!(party.clients[a].video_indices()[0], keyframe.start);
    // Later, a request means a frozen picture: it is answered.
    party.advance(START_REQUEST_GRACE);
    party.clients[a].request_keyframe();
    party.advance(ms(150));
    assert_eq!(party.keyframes_asked.len(), 1);
}

#[test]
fn a_viewer_connecting_while_a_forced_keyframe_is_in_flight_starts_with_it() {
    let mut party = Party::new();
    let a = party.connect();
    let forced_at = party.clients[a].connected_at.unwrap();
    let b = party.connect();
    let b_at = party.clients[b].connected_at.unwrap();
    assert!(
        b_at - forced_at < KEYFRAME_IN_FLIGHT,
        "B connects in flight"
    );
    assert_eq!(party.requested(), 1, "B asked for nothing");
    assert_eq!(party.keyframes_asked, [forced_at]);

    party.advance(MEDIA_GRACE);
    party.frame(false, 2); // Still the old GOP: nobody starts there.
    let keyframe = party.frame(true, 3);
    let deltas = party.frame(false, 2);
    party.advance(ms(50));
    for n in [a, b] {
        let client = &party.clients[n];
        client.assert_clean_video();
        assert_eq!(
            client.video_indices(),
            (keyframe.start..deltas.end).collect::<Vec<_>>()
        );
    }
    assert_eq!(party.forced(), 1);
}

#[test]
fn a_viewer_connecting_with_a_young_gop_is_served_the_cached_gop() {
    let mut party = Party::new();
    let t0 = party.now;
    party.frame(false, 2); // Before any keyframe: not part of a GOP.
    let gop = party.frame(true, 5);
    party.frame(false, 3);
    party.advance(ms(100));
    let a = party.connect();
    let connected = party.clients[a].connected_at.unwrap();
    assert!(connected - t0 < GOP_REPLAY_AGE, "the GOP is young");
    party.advance(ms(100));
    let live = party.frame(false, 2);
    party.advance(ms(10));

    assert!(party.keyframes_asked.is_empty(), "the encoder was spared");
    assert_eq!(party.requested(), 0);
    let client = &party.clients[a];
    client.assert_clean_video();
    assert_eq!(
        client.video_indices(),
        (gop.start..live.end).collect::<Vec<_>>(),
        "the cached GOP, then live on"
    );
}

#[test]
fn a_viewer_connecting_with_an_old_gop_and_an_open_window_gets_a_forced_keyframe() {
    let mut party = Party::new();
    let gop_at = party.now;
    party.frame(true, 5);
    party.frame(false, 3);
    party.advance(GOP_REPLAY_AGE + ms(100));
    let a = party.connect();
    let connected = party.clients[a].connected_at.unwrap();
    assert!(connected - gop_at >= GOP_REPLAY_AGE, "the GOP is old");
    assert_eq!(party.keyframes_asked, [connected], "forced for it");

    party.advance(MEDIA_GRACE);
    party.frame(false, 2);
    party.advance(ms(50));
    assert!(
        party.clients[a].video.is_empty(),
        "nothing before its keyframe"
    );
    let keyframe = party.frame(true, 4);
    let deltas = party.frame(false, 2);
    party.advance(ms(50));
    let client = &party.clients[a];
    client.assert_clean_video();
    assert_eq!(
        client.video_indices(),
        (keyframe.start..deltas.end).collect::<Vec<_>>()
    );
}

#[test]
fn a_viewer_connecting_with_an_old_gop_and_a_closed_window_is_served_the_cached_gop() {
    let mut party = Party::new();
    let a = party.connect();
    let forced_at = party.clients[a].connected_at.unwrap();
    assert_eq!(party.keyframes_asked, [forced_at]);
    party.advance(ms(20));
    let gop_at = party.now;
    let gop = party.frame(true, 4); // The keyframe forced for A: no longer in flight.
    party.frame(false, 3);
    party.advance_to(gop_at + GOP_REPLAY_AGE + ms(10));

    let b = party.connect();
    let b_at = party.clients[b].connected_at.unwrap();
    assert!(b_at - gop_at >= GOP_REPLAY_AGE, "the GOP is old");
    assert!(b_at - forced_at < KEYFRAME_INTERVAL, "the window is closed");
    party.advance(ms(100));
    assert_eq!(party.requested(), 1, "B did not wait for the window");
    assert_eq!(party.forced(), 1);
    let client = &party.clients[b];
    client.assert_clean_video();
    assert_eq!(
        client.video_indices(),
        (gop.start..gop.end + 3).collect::<Vec<_>>()
    );
}

#[test]
fn a_replayed_gop_is_paced_after_the_grace_and_live_packets_queue_behind_it() {
    let mut party = Party::new();
    let gop = party.frame(true, 100);
    party.frame(false, 10);
    party.frame(false, 10);
    let a = party.connect();
    let connected = party.clients[a].connected_at.unwrap();
    // Inside the grace: live video queues behind the replay, audio is dropped.
    let live = party.frame(false, 10);
    let early_audio = party.audio();
    party.advance(ms(200));
    let late_audio = party.audio();
    let fed = party.now;
    let after = party.frame(false, 1);
    party.advance(ms(10));

    let client = &party.clients[a];
    client.assert_clean_video();
    assert_eq!(
        client.video_indices(),
        (gop.start..after.end).collect::<Vec<_>>(),
        "in order: the cached GOP, the live packets queued behind it, then live"
    );
    let video = &client.video;
    assert_eq!(
        video[0].at,
        connected + MEDIA_GRACE,
        "the first burst leaves when the grace ends"
    );
    for (i, got) in video.iter().enumerate().skip(REPLAY_BURST) {
        assert!(
            got.at - video[i - REPLAY_BURST].at >= REPLAY_TICK,
            "more than {REPLAY_BURST} packets within {REPLAY_TICK:?} at packet {i}"
        );
    }
    let backlog = (live.end - gop.start) as usize;
    let bursts = backlog.div_ceil(REPLAY_BURST) as u32;
    assert_eq!(
        video[backlog - 1].at,
        connected + MEDIA_GRACE + REPLAY_TICK * (bursts - 1),
        "one burst per tick, no tick skipped"
    );
    assert_eq!(video.last().unwrap().at, fed, "live again: sent at once");
    let audio: Vec<u32> = client.audio.iter().map(|g| g.index).collect();
    assert!(!audio.contains(&early_audio), "audio is held for the grace");
    assert_eq!(audio, [late_audio]);
}

#[test]
fn a_silent_viewer_is_reaped_after_the_timeout() {
    let mut party = Party::new();
    let a = party.connect();
    party.advance(ms(500));
    party.clients[a].online = false; // Gone without a goodbye.
    let last = party.clients[a].last_sent.unwrap();
    party.advance_to(last + VIEWER_TIMEOUT - ms(1));
    assert!(party.holds(a), "not before the timeout");
    assert_eq!(party.stats.connected.load(Ordering::Relaxed), 1);
    party.advance_to(last + VIEWER_TIMEOUT);
    assert!(!party.holds(a), "reaped at the timeout");
    assert_eq!(party.stats.connected.load(Ordering::Relaxed), 0);
    assert_eq!(party.stats.viewers.load(Ordering::Relaxed), 0);
}

#[test]
fn a_silent_viewer_gets_no_media_and_resumes_at_a_keyframe_without_a_gap_once_heard() {
    let mut party = Party::new();
    let a = party.connect();
    let b = party.connect();
    party.play(ms(1500));
    party.clients[a].online = false; // A dead link, or a tab that closed.
    let last = party.clients[a].last_sent.unwrap();
    let shown = party.clients[a].video.len();
    assert!(shown > 0, "it watched before");

    party.play(last + MEDIA_SILENCE - party.now - ms(50));
    let written = party.viewer(a).video_packets;
    assert!(written > 0);
    assert_eq!(party.viewer(a).pauses, 0, "not before the silence");
    party.play(ms(2000));
    let paused = party.viewer(a).video_packets;
    // At most the packets of the 50 ms before the silence ran out.
    assert!(
        paused - written <= 30,
        "sent {} more packets after {MEDIA_SILENCE:?} of silence",
        paused - written
    );
    assert_eq!(party.viewer(a).pauses, 1);
    party.play(ms(1000));
    assert_eq!(
        party.viewer(a).video_packets,
        paused,
        "nothing while silent"
    );
    assert!(party.holds(a), "its session waits for the viewer time-out");
    let b_before = party.clients[b].video.len();

    party.clients[a].online = true;
    party.play(ms(3000));
    let client = &party.clients[a];
    let resumed = &client.video[shown..];
    assert!(!resumed.is_empty(), "heard again: its video resumed");
    assert!(
        resumed[0].keyframe,
        "it resumes at a keyframe: {:?}",
        resumed[0]
    );
    // What was sent into the dead link before the pause is lost on the way, as for any
    // viewer; what was withheld leaves no gap: the sequence carries on from the last sent.
    assert_eq!(
        resumed[0].seq,
        client.video[0].seq + paused,
        "resumes right after the last packet sent"
    );
    // Older numbers arriving now are repairs of that loss (the client asked for them).
    let live: Vec<u64> = resumed
        .iter()
        .map(|g| g.seq)
        .filter(|&seq| seq >= resumed[0].seq)
        .collect();
    for pair in live.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap after resuming: {pair:?}");
    }
    assert!(
        party.clients[b].video.len() > b_before,
        "the other viewer watched on"
    );
    assert_eq!(
        party.viewer(b).pauses,
        0,
        "a viewer that talks is never paused"
    );
}

#[test]
fn a_fan_out_behind_the_encoder_for_seconds_is_saturated_until_it_keeps_up() {
    use super::load::{CLEAR_LAG, SATURATED_AFTER, SATURATED_LAG, WINDOW};
    let saturated = |party: &Party| party.stats.saturated.load(Ordering::Relaxed);
    let mut party = Party::new();
    party.connect();
    party.play(ms(2000));
    assert!(!saturated(&party));
    party.video_lag = SATURATED_LAG + ms(100);
    party.play(WINDOW * (SATURATED_AFTER - 1));
    assert!(!saturated(&party), "a moment behind is not an overload");
    party.play(WINDOW * 2);
    assert!(saturated(&party), "{SATURATED_AFTER} windows behind are");
    assert!(party.stats.fanout_lag_ms.load(Ordering::Relaxed) >= 500);
    party.video_lag = CLEAR_LAG / 2;
    party.play(WINDOW * 2 + ms(100));
    assert!(!saturated(&party), "it keeps up again");
}

#[test]
fn a_viewer_that_never_connects_is_reaped_after_the_connect_timeout() {
    let mut party = Party::new();
    let joined = party.now;
    let a = party.join_offline();
    party.advance_to(joined + CONNECT_TIMEOUT - ms(1));
    assert!(party.holds(a));
    assert_eq!(party.stats.viewers.load(Ordering::Relaxed), 1);
    assert_eq!(party.seats.counts(), (0, 1), "pending, not seated");
    party.advance_to(joined + CONNECT_TIMEOUT);
    assert!(!party.holds(a));
    assert_eq!(party.stats.viewers.load(Ordering::Relaxed), 0);
    assert_eq!(party.stats.connected.load(Ordering::Relaxed), 0);
    assert_eq!(party.seats.counts(), (0, 0), "its pending place is free");
}

#[test]
fn leaving_ends_a_session_once() {
    let mut party = Party::new();
    let a = party.connect();
    let id = party.clients[a].id;
    let now = party.now;
    assert!(party.engine.leave(now, id));
    assert!(!party.engine.leave(now, id), "already gone");
    assert_eq!(party.stats.viewers.load(Ordering::Relaxed), 0);
    assert_eq!(party.stats.connected.load(Ordering::Relaxed), 0);
    // Its datagrams now go nowhere, and media reaches no one.
    party.advance(ms(100));
    party.frame(true, 2);
    assert!(party.clients[a].video.is_empty());
}
