//! The on-demand VP8 rendition: who starts it, who receives it, and when it stops.

use super::ms;
use super::party::{Party, VP8};
use crate::broadcast::RENDITION_LINGER;
use crate::broadcast::stream::RenditionId;
use crate::broadcast::viewer::MEDIA_GRACE;

#[test]
fn a_viewer_without_h264_starts_the_vp8_rendition_and_receives_only_it() {
    let mut party = Party::new();
    let h = party.connect();
    assert!(party.vp8_switches.is_empty(), "nobody needs VP8 yet");
    let joined = party.now;
    let v = party.connect_vp8();
    assert_eq!(party.vp8_switches, [(joined, true)], "started at its join");
    assert_eq!(
        party.vp8_keyframes_asked,
        [joined],
        "with a keyframe asked for it at once"
    );
    party.advance(MEDIA_GRACE);
    let h264 = party.frame(true, 3);
    let vp8 = party.frame_of(VP8, true, 3);
    let h264_delta = party.frame(false, 2);
    let vp8_delta = party.frame_of(VP8, false, 2);
    party.advance(ms(10));

    let vp8_client = &party.clients[v];
    vp8_client.assert_clean_video();
    let expected: Vec<u32> = vp8.clone().chain(vp8_delta.clone()).collect();
    assert_eq!(vp8_client.video_indices(), expected);
    let h264_client = &party.clients[h];
    h264_client.assert_clean_video();
    let expected: Vec<u32> = h264.chain(h264_delta).collect();
    assert_eq!(h264_client.video_indices(), expected);

    let renditions = party.engine.renditions();
    assert_eq!(renditions.len(), 2);
    assert_eq!(
        (
            renditions[1].id,
            renditions[1].active,
            renditions[1].viewers
        ),
        (VP8, true, 1)
    );
    assert_eq!(
        (renditions[0].id, renditions[0].viewers),
        (RenditionId::MAIN, 1)
    );
    let stats = party.engine.viewer_stats(party.now);
    let codecs: Vec<&str> = stats.iter().map(|s| s.codec.as_str()).collect();
    assert!(
        codecs.contains(&"VP8") && codecs.contains(&"H264"),
        "{codecs:?}"
    );
}

#[test]
fn the_vp8_rendition_stops_a_linger_after_its_last_viewer_leaves() {
    let mut party = Party::new();
    let a = party.connect_vp8();
    let b = party.connect_vp8();
    let started = party.vp8_switches.clone();
    assert_eq!(started.len(), 1, "one start for two viewers");
    party.advance(ms(500));
    let now = party.now;
    assert!(party.engine.leave(now, party.clients[a].id));
    party.advance(ms(500));
    let left = party.now;
    assert!(party.engine.leave(left, party.clients[b].id));
    party.advance_to(left + RENDITION_LINGER - ms(1));
    assert_eq!(party.vp8_switches, started, "still warm");
    party.advance_to(left + RENDITION_LINGER);
    assert_eq!(
        party.vp8_switches.last(),
        Some(&(left + RENDITION_LINGER, false))
    );
    assert!(!party.engine.renditions()[1].active);

    let again = party.now;
    party.connect_vp8();
    assert_eq!(
        party.vp8_switches.last(),
        Some(&(again, true)),
        "a new viewer starts it again"
    );
}

#[test]
fn a_viewer_back_within_the_linger_finds_the_vp8_rendition_running() {
    let mut party = Party::new();
    let a = party.connect_vp8();
    party.advance(ms(100));
    let now = party.now;
    assert!(party.engine.leave(now, party.clients[a].id));
    party.advance(RENDITION_LINGER / 2);
    party.connect_vp8();
    party.advance(RENDITION_LINGER * 2);
    assert_eq!(
        party.vp8_switches.len(),
        1,
        "never stopped: {:?}",
        party.vp8_switches
    );
}
