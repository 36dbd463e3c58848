//! The chat panel in the composite, wired: whoever runs the party connects the chat to the
//! pipeline's chat panel here. [`spawn`] follows a [`Chat`], draws the visible end of it with
//! the overlay ([`render_panel`]) on tokio's blocking pool, and hands each picture to
//! [`Pipeline::set_chat_panel`]. The pipeline only swaps the picture in, so a chat flood costs
//! the video a few cheap frame swaps a second, never a stall.

use std::sync::Arc;
use std::time::Duration;

use image::RgbaImage;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chat::{Chat, ChatEvent};
use crate::overlay::chat::{ChatArea, EmoteCache, render_panel};
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;

/// Renders never follow each other closer than this: at 1,000 messages a second the panel
/// shows the latest state five times a second instead of drawing every message.
pub const MIN_RENDER_INTERVAL: Duration = Duration::from_millis(200);

/// Follows `chat` and keeps the chat area of `pipeline` showing it, with emote pictures from
/// `emotes`.
///
/// The panel is drawn again when a message, notice, clear or deletion arrives, or when the
/// layout's chat area changes, but never within [`MIN_RENDER_INTERVAL`] of the previous
/// drawing: a burst is coalesced into one picture of its end. Each drawing reads the hub's
/// backlog, which is exactly what is visible (cleared and deleted messages are already gone),
/// so a lagging subscription loses nothing: it only triggers a redraw.
///
/// Call it within a tokio runtime (it spawns a task there). The task ends at shutdown, when
/// the pipeline stops or when the chat's live stream closes. It holds a clone of `chat`
/// to read the backlog, so while it runs the stream stays open.
pub fn spawn(
    chat: Chat,
    pipeline: Pipeline,
    emotes: EmoteCache,
    shutdown: &Shutdown,
) -> JoinHandle<()> {
    let area = pipeline.chat_area();
    let show = move |image| pipeline.set_chat_panel(image).is_ok();
    shutdown.spawn(
        "chat-panel",
        drive(chat, area, Arc::new(emotes), shutdown.token(), show),
    )
}

/// The loop, apart from the pipeline so tests can watch what it shows: `show` gets each new
/// panel (`None`: the plain panel) and says whether anyone is still there.
async fn drive(
    chat: Chat,
    mut area: watch::Receiver<Option<ChatArea>>,
    emotes: Arc<EmoteCache>,
    cancel: CancellationToken,
    show: impl Fn(Option<RgbaImage>) -> bool,
) {
    let mut live = chat.subscribe().live;
    // The backlog may already hold messages: draw them at once.
    let mut dirty = true;
    let mut last_render: Option<tokio::time::Instant> = None;
    loop {
        let due = last_render.map_or_else(tokio::time::Instant::now, |at| at + MIN_RENDER_INTERVAL);
        tokio::select! {
            // Stopping first; then the timer: under a flood the stream is always ready, and
            // the panel must still be drawn.
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(due), if dirty => {
                dirty = false;
                let current = *area.borrow_and_update();
                // No chat area in this layout: nothing to draw until one comes back.
                let Some(current) = current else { continue };
                last_render = Some(tokio::time::Instant::now());
                let Some(panel) = render(&chat, current, &emotes).await else { continue };
                if !show(panel) {
                    break;
                }
            }
            changed = area.changed() => {
                // The pipeline has stopped.
                if changed.is_err() {
                    break;
                }
                dirty = true;
            }
            received = live.recv() => match received {
                Ok(published) => dirty |= changes_panel(&published.event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "chat panel lagged; redrawing from the backlog");
                    dirty = true;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// Draws the backlog for `area` on the blocking pool. `Some(None)` is the plain panel (an
/// empty chat needs no drawing); `None` means the drawing failed and nothing should change.
async fn render(
    chat: &Chat,
    area: ChatArea,
    emotes: &Arc<EmoteCache>,
) -> Option<Option<RgbaImage>> {
    let events = chat.backlog();
    if events.is_empty() {
        return Some(None);
    }
    let emotes = emotes.clone();
    let drawn = tokio::task::spawn_blocking(move || {
        render_panel(&events, area.width, area.height, area.background, &emotes)
    })
    .await;
    match drawn {
        Ok(image) => Some(Some(image)),
        Err(error) => {
            tracing::error!(%error, "drawing the chat panel failed; keeping the previous one");
            None
        }
    }
}

/// Whether an event changes what the panel shows.
fn changes_panel(event: &ChatEvent) -> bool {
    matches!(
        event,
        ChatEvent::Message(_) | ChatEvent::Notice(_) | ChatEvent::Clear(_) | ChatEvent::Delete(_)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::chat::ChatConfig;
    use crate::pipeline::layout::Layout;

    /// Every panel the renderer's loop handed over, in order.
    type Shown = Arc<Mutex<Vec<Option<RgbaImage>>>>;

    /// The renderer's loop, without a pipeline: what it would show, and when.
    fn spawn_drive(
        chat: &Chat,
        area: watch::Receiver<Option<ChatArea>>,
        cancel: CancellationToken,
    ) -> (JoinHandle<()>, Shown) {
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        let task = tokio::spawn(drive(
            chat.clone(),
            area,
            Arc::new(EmoteCache::new("/nonexistent/cowatch-emotes")),
            cancel,
            move |image| {
                sink.lock().unwrap().push(image);
                true
            },
        ));
        (task, shown)
    }

    /// The side-panel chat area.
    fn area() -> Option<ChatArea> {
        Layout::builtin("side-panel").unwrap().chat_area()
    }

    #[tokio::test]
    async fn a_flood_is_drawn_a_few_times_a_second() {
        let chat = Chat::new(ChatConfig::default());
        let (tx, rx) = watch::channel(area());
        let (task, shown) = spawn_drive(&chat, rx, CancellationToken::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            shown.lock().unwrap().len(),
            1,
            "the empty start, drawn once"
        );
        assert!(shown.lock().unwrap()[0].is_none(), "as the plain panel");

        // 1,000 messages in one second.
        let started = Instant::now();
        for i in 0..1000 {
            chat.post(&format!("user{i}"), "spam spam spam").unwrap();
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let took = started.elapsed();
        tokio::time::sleep(MIN_RENDER_INTERVAL * 2).await;
        let renders = shown.lock().unwrap().len() - 1;
        let most = (took.as_millis() / MIN_RENDER_INTERVAL.as_millis()) as usize + 2;
        assert!(
            (2..=most).contains(&renders),
            "{renders} renders for 1,000 messages in {took:?}"
        );
        assert!(shown.lock().unwrap().last().unwrap().is_some());

        // Room modes are not drawn; a clear is, as the plain panel.
        let before = shown.lock().unwrap().len();
        chat.publish(ChatEvent::RoomState(Default::default()));
        tokio::time::sleep(MIN_RENDER_INTERVAL * 2).await;
        assert_eq!(shown.lock().unwrap().len(), before);
        // Ending the party clears the whole chat.
        chat.end_party();
        tokio::time::sleep(MIN_RENDER_INTERVAL * 2).await;
        assert_eq!(shown.lock().unwrap().len(), before + 1);
        assert!(shown.lock().unwrap().last().unwrap().is_none());

        // The pipeline going away ends the task.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the renderer ends with the pipeline")
            .unwrap();
    }

    #[tokio::test]
    async fn a_new_chat_area_is_drawn_at_its_size_and_none_draws_nothing() {
        let chat = Chat::new(ChatConfig::default());
        chat.post("alice", "hello").unwrap();
        let (tx, rx) = watch::channel(None);
        let (_task, shown) = spawn_drive(&chat, rx, CancellationToken::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(shown.lock().unwrap().is_empty(), "no chat area, no drawing");
        tx.send_replace(area().map(|a| ChatArea {
            width: 200,
            height: 100,
            ..a
        }));
        let deadline = Instant::now() + Duration::from_secs(2);
        while shown.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shown = shown.lock().unwrap();
        let image = shown.last().expect("drawn").as_ref().expect("not plain");
        assert_eq!(image.dimensions(), (200, 100));
    }

    #[tokio::test]
    async fn cancelling_ends_the_task() {
        let chat = Chat::new(ChatConfig::default());
        let (_tx, rx) = watch::channel(area());
        let cancel = CancellationToken::new();
        let (task, _shown) = spawn_drive(&chat, rx, cancel.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the panel task ends when cancelled")
            .unwrap();
    }
}
