//! Loss repair: a video packet a viewer reports lost (NACK) is sent again on its RTX stream,
//! and both are counted for `/metrics`.

use std::sync::atomic::Ordering;

use super::ms;
use super::party::Party;
use crate::broadcast::viewer::MEDIA_GRACE;

// Plain resends to a viewer without RTX are shown with a real NACK-sending peer (webrtc-rs,
// the probe) in tests/loss.rs: str0m, the viewer here, sends no NACK without RTX.

#[test]
fn a_lost_video_packet_is_resent_after_the_viewers_nack_and_counted() {
    let mut party = Party::new();
    let a = party.connect();
    assert!(party.clients[a].answer_has_rtx());
    party.advance(MEDIA_GRACE);
    party.frame(true, 5);
    party.advance(ms(30));
    party.clients[a].lose_video = 1;
    let hit = party.frame(false, 3);
    party.advance(ms(30));
    party.frame(false, 3);
    party.advance(ms(1500));

    let client = &party.clients[a];
    client.assert_clean_video_after_repair();
    assert!(
        client.video_indices().contains(&hit.start),
        "the lost packet never arrived: {:?}",
        client.video_indices()
    );
    let nacks = party.stats.nacks_received.load(Ordering::Relaxed);
    let resent = party.stats.packets_resent.load(Ordering::Relaxed);
    assert!(nacks >= 1, "no NACK counted");
    assert!(resent >= 1, "no resend counted");
    let viewer = &party.engine.viewer_stats(party.now)[0];
    assert_eq!(
        (viewer.nacks_received, viewer.packets_resent),
        (nacks, resent)
    );
    assert_eq!(viewer.keyframe_requests, 0, "repaired without a keyframe");
}
