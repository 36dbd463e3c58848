//! The chat panel in the composite, seen as a viewer sees it: the pipeline's RTP decoded back
//! into pictures, with the chat area checked for text.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cowatch::chat::model::{Clear, ClearKind, RoomModes, from_twitch};
use cowatch::chat::{Chat, ChatConfig, ChatEvent};
use cowatch::overlay::chat::EmoteCache;
use cowatch::panel;
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::layout::{Layout, Rect};
use cowatch::pipeline::source::WebcamSource;
use twitch_irc::message::{IRCMessage, ServerMessage};

/// A channel differing from the panel colour by more than this is ink, not codec noise: the
/// panel is flat and static, so the encoder reproduces it within a few levels.
const INK: u8 = 40;

/// Where the ink is in the chat area.
#[derive(Debug)]
struct Ink {
    /// Ink pixels in the area.
    total: usize,
    /// Those in its top third, where old messages scroll off.
    top_third: usize,
    /// Those in its bottom third, where the newest are.
    bottom_third: usize,
}

/// Counts ink pixels in `area`, leaving out a few pixels along its edges where the encoder
/// blends in the neighbouring movie and webcam.
fn ink(img: &image::RgbImage, area: Rect, bg: [u8; 3]) -> Ink {
    const EDGE: u32 = 6;
    let (x0, y0) = (area.x as u32 + EDGE, area.y as u32 + EDGE);
    let (x1, y1) = (
        area.x as u32 + area.width - EDGE,
        area.y as u32 + area.height - EDGE,
    );
    let third = (y1 - y0) / 3;
    let mut found = Ink {
        total: 0,
        top_third: 0,
        bottom_third: 0,
    };
    for y in y0..y1 {
        for x in x0..x1 {
            let p = img.get_pixel(x, y).0;
            if p.iter().zip(bg).any(|(a, b)| a.abs_diff(b) > INK) {
                found.total += 1;
                if y < y0 + third {
                    found.top_third += 1;
                }
                if y >= y1 - third {
                    found.bottom_third += 1;
                }
            }
        }
    }
    found
}

/// The chat area holds no text.
fn plain(img: &image::RgbImage, area: Rect, bg: [u8; 3]) -> Result<(), String> {
    let ink = ink(img, area, bg);
    if ink.total <= 10 {
        Ok(())
    } else {
        Err(format!("the chat area should be empty: {ink:?}"))
    }
}

/// A few short messages: plenty of text, all of it at the bottom.
fn a_few_lines_at_the_bottom(img: &image::RgbImage, area: Rect, bg: [u8; 3]) -> Result<(), String> {
    let ink = ink(img, area, bg);
    if ink.total >= 400 && ink.bottom_third * 10 >= ink.total * 9 && ink.top_third <= 10 {
        Ok(())
    } else {
        Err(format!("expected text at the bottom only: {ink:?}"))
    }
}

/// A Twitch message with an emote, as the bridge would publish it.
fn twitch_message() -> ChatEvent {
    let line = "@badge-info=;badges=;color=#1E90FF;display-name=Viewer;emotes=25:6-10;flags=;\
                id=7a0d7c5e-1;mod=0;room-id=1;subscriber=0;tmi-sent-ts=1594554085753;turbo=0;\
                user-id=2;user-type= :viewer!viewer@viewer.tmi.twitch.tv PRIVMSG #chan :hello Kappa";
    let message = ServerMessage::try_from(IRCMessage::parse(line).unwrap()).unwrap();
    from_twitch(&message, &RoomModes::default()).expect("a PRIVMSG is a chat event")
}

/// Waits until the stream has moved on by `frames` decoded frames within `within`.
fn assert_flowing(viewer: &Viewer, frames: u64, within: Duration, what: &str) {
    let start = viewer.frames();
    let deadline = Instant::now() + within;
    while viewer.frames() < start + frames {
        assert!(
            Instant::now() < deadline,
            "{what}: the stream stalled ({} frames in {within:?})",
            viewer.frames() - start
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chat_area_shows_chat_at_the_bottom_and_nothing_when_nothing_was_said() {
    let dir = scratch("overlay-chat");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 30);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let pipeline = Pipeline::start(settings(&movie, WebcamSource::None, "side-panel")).unwrap();
    let chat = Chat::new(ChatConfig::default());
    let renderer = panel::spawn(
        chat.clone(),
        pipeline.clone(),
        EmoteCache::default(),
        &cowatch::shutdown::Shutdown::new(),
    );
    let viewer = Viewer::watch(&pipeline);
    let side = Layout::builtin("side-panel").unwrap();
    let area = side.chat.unwrap();
    let c = side.chat_background;
    let bg = [c.r, c.g, c.b];

    // Nothing said: the panel is plain, and stays so.
    viewer.wait_for("plain chat area", Duration::from_secs(5), |img| {
        expect_at(img, side.movie, MOVIE_RED, "movie")?;
        plain(img, area, bg)
    });
    std::thread::sleep(Duration::from_millis(600));
    plain(&viewer.fresh_frame(), area, bg).unwrap();

    // Three short messages: two from the party, one from Twitch.
    chat.post("alice", "hello everyone").unwrap();
    chat.post("bob_42", "this movie rocks").unwrap();
    chat.publish(twitch_message());
    viewer.wait_for("three messages", Duration::from_secs(2), |img| {
        a_few_lines_at_the_bottom(img, area, bg)
    });

    // Kept across layouts: none in inset, drawn again as soon as side-panel is back.
    runtime
        .block_on(pipeline.set_layout(Layout::builtin("inset").unwrap()))
        .unwrap();
    assert_eq!(*pipeline.chat_area().borrow(), None);
    runtime.block_on(pipeline.set_layout(side.clone())).unwrap();
    viewer.wait_for(
        "messages after a layout switch",
        Duration::from_secs(3),
        |img| a_few_lines_at_the_bottom(img, area, bg),
    );

    // A flood fills the panel and never stalls the stream.
    for i in 0..2000 {
        chat.post(&format!("flood{i}"), "spam spam spam spam")
            .unwrap();
    }
    assert_flowing(&viewer, 20, Duration::from_secs(2), "during a flood");
    viewer.wait_for("a full panel", Duration::from_secs(2), |img| {
        let ink = ink(img, area, bg);
        (ink.top_third > 200)
            .then_some(())
            .ok_or(format!("the top should be filled: {ink:?}"))
    });

    // A moderator clears the chat: the panel is empty again.
    chat.publish(ChatEvent::Clear(Clear {
        origin: cowatch::chat::Origin::Twitch,
        channel: "chan".into(),
        action: ClearKind::Clear,
        target_login: None,
        target_user_id: None,
        duration_s: None,
        timestamp_ms: 0,
    }));
    viewer.wait_for("cleared chat", Duration::from_secs(2), |img| {
        plain(img, area, bg)
    });
    assert_flowing(&viewer, 20, Duration::from_secs(2), "after the clear");

    let health = pipeline.health();
    assert!(health.errors.is_empty(), "{:?}", health.errors);
    runtime.block_on(pipeline.shutdown());
    // The renderer hears that the pipeline stopped and ends.
    runtime
        .block_on(tokio::time::timeout(Duration::from_secs(3), renderer))
        .expect("the renderer ends with the pipeline")
        .unwrap();
}
