//! Moving a viewer between renditions: at the target's keyframe, as one continuous stream.

use super::ms;
use std::time::Duration;

use super::party::{LOW, Link, Party};
use crate::broadcast::Quality;
use crate::broadcast::stream::RenditionId;
use crate::broadcast::viewer::MEDIA_GRACE;

/// One frame's worth of RTP time at 30 fps.
const FRAME: u32 = 3000;

/// A viewer watching the main rendition from a keyframe, two frames in.
fn watching() -> (Party, usize) {
    let mut party = Party::with_ladder();
    let a = party.connect();
    party.advance(MEDIA_GRACE);
    party.frame_at(RenditionId::MAIN, true, 3, 0);
    party.frame_at(RenditionId::MAIN, false, 2, FRAME);
    (party, a)
}

#[test]
fn a_picked_quality_moves_the_viewer_at_the_targets_keyframe_in_one_continuous_stream() {
    let (mut party, a) = watching();
    let picked = party.now;
    party.set_quality(a, Quality::Max(360));
    assert_eq!(party.low_switches, [(picked, true)], "360p started for it");
    assert_eq!(party.low_keyframes_asked, [picked], "with a keyframe asked");

    // Until 360p's keyframe, it keeps watching 720p: the picture never stops for a switch.
    let main_before = party.frame_at(RenditionId::MAIN, false, 2, 2 * FRAME);
    party.frame_at(LOW, false, 1, 2 * FRAME);
    let low_key = party.frame_at(LOW, true, 2, 3 * FRAME);
    party.frame_at(RenditionId::MAIN, false, 2, 3 * FRAME);
    let low_delta = party.frame_at(LOW, false, 1, 4 * FRAME);
    party.advance(ms(200));

    let client = &party.clients[a];
    client.assert_clean_video();
    let got = client.video_indices();
    let tail: Vec<u32> = main_before
        .chain(low_key.clone())
        .chain(low_delta)
        .collect();
    assert!(got.ends_with(&tail), "{got:?} does not end with {tail:?}");
    let at_switch = client.video.len() - 3;
    assert!(
        client.video[at_switch].keyframe,
        "it switched at a keyframe"
    );
    for pair in client.video.windows(2) {
        let step = pair[1].timestamp.wrapping_sub(pair[0].timestamp) as i32;
        assert!(step >= 0, "timestamp went back: {pair:?}");
    }
    assert_eq!(
        client.video[at_switch].timestamp,
        3 * FRAME,
        "one timestamp line: the keyframe keeps its own"
    );

    let renditions = party.engine.renditions();
    let low = renditions.iter().find(|r| r.id == LOW).unwrap();
    let main = renditions
        .iter()
        .find(|r| r.id == RenditionId::MAIN)
        .unwrap();
    assert_eq!((low.active, low.viewers, main.viewers), (true, 1, 0));
    let stats = &party.engine.viewer_stats(party.now)[0];
    assert_eq!(
        (
            stats.rendition.as_str(),
            stats.quality.as_str(),
            stats.switches
        ),
        ("360p", "360p", 1)
    );
}

#[test]
fn a_target_keyframe_a_frame_behind_is_nudged_past_what_was_sent() {
    let (mut party, a) = watching();
    party.set_quality(a, Quality::Max(360));
    party.frame_at(RenditionId::MAIN, false, 2, 2 * FRAME);
    // The 360p encoder is a frame behind the 720p one: its keyframe carries a timestamp the
    // viewer already has. A browser would glue the two into one frame, or drop the older.
    party.frame_at(LOW, true, 2, 2 * FRAME);
    party.frame_at(LOW, false, 1, 3 * FRAME);
    party.advance(ms(200));

    let client = &party.clients[a];
    client.assert_clean_video();
    let stamps: Vec<u32> = client.video.iter().map(|g| g.timestamp).collect();
    let n = stamps.len();
    assert_eq!(
        &stamps[n - 5..],
        [
            2 * FRAME,
            2 * FRAME,
            2 * FRAME + 1,
            2 * FRAME + 1,
            3 * FRAME + 1
        ]
    );
}

#[test]
fn leaving_in_the_middle_of_a_switch_releases_both_renditions() {
    let (mut party, a) = watching();
    party.set_quality(a, Quality::Max(360));
    let id = party.clients[a].id;
    let now = party.now;
    assert!(party.engine.leave(now, id));
    let renditions = party.engine.renditions();
    assert!(renditions.iter().all(|r| r.viewers == 0), "{renditions:?}");
}

#[test]
fn picking_auto_again_before_the_keyframe_cancels_the_move() {
    let (mut party, a) = watching();
    party.set_quality(a, Quality::Max(360));
    party.set_quality(a, Quality::Auto);
    // Without an estimate Auto keeps what plays; the 360p keyframe no longer moves it.
    party.frame_at(LOW, true, 2, 2 * FRAME);
    let main = party.frame_at(RenditionId::MAIN, false, 2, 2 * FRAME);
    party.advance(ms(200));
    let got = party.clients[a].video_indices();
    assert!(got.ends_with(&main.collect::<Vec<_>>()), "{got:?}");
    let low = party
        .engine
        .renditions()
        .into_iter()
        .find(|r| r.id == LOW)
        .unwrap();
    assert_eq!(low.viewers, 0);
}

/// Plays until viewer `n` receives `rendition` or `limit` passes; how long it took.
fn until_on(party: &mut Party, n: usize, rendition: &str, limit: Duration) -> Option<Duration> {
    let start = party.now;
    let mut seen = Vec::new();
    while party.now < start + limit {
        party.play(ms(100));
        let v = party.viewer(n);
        seen.push((
            ms_since(start, party.now),
            v.estimate_kbps,
            v.rendition.clone(),
        ));
        if v.rendition == rendition {
            return Some(party.now - start);
        }
    }
    eprintln!("never on {rendition}: (ms, estimate kbit/s, rendition) {seen:?}");
    None
}

fn ms_since(start: std::time::Instant, now: std::time::Instant) -> u128 {
    (now - start).as_millis()
}

#[test]
fn behind_a_1_mbit_link_a_viewer_steps_down_within_seconds_and_back_up_once_it_clears() {
    let mut party = Party::with_ladder();
    let a = party.connect();
    party.play(Duration::from_secs(5));
    let before = party.viewer(a);
    assert_eq!(
        (before.rendition.as_str(), before.switches),
        ("720p", 0),
        "{before:?}"
    );

    party.clients[a].link = Some(Link::new(1_000_000, ms(200)));
    let down =
        until_on(&mut party, a, "360p", Duration::from_secs(10)).expect("never stepped down");
    assert!(
        down <= Duration::from_secs(5),
        "stepped down after {down:?}"
    );
    // 360p fits the link: it stays, and the link stops dropping.
    party.play(Duration::from_secs(1));
    let dropped = party.clients[a].link.as_ref().unwrap().dropped;
    party.play(Duration::from_secs(4));
    let link = party.clients[a].link.as_ref().unwrap();
    assert_eq!(party.viewer(a).rendition, "360p");
    assert!(
        link.dropped - dropped < 20,
        "still dropping: {}",
        link.dropped - dropped
    );

    party.clients[a].link = None;
    let up = until_on(&mut party, a, "720p", Duration::from_secs(30)).expect("never stepped up");
    assert!(up <= Duration::from_secs(20), "stepped up after {up:?}");
    eprintln!("stepped down after {down:?}, up after {up:?}");
    let after = party.viewer(a);
    assert_eq!(after.switches, 2, "{after:?}");
}
