//! GStreamer helpers shared by the pipeline and the library: elements that name a missing
//! plugin, preroll with a timeout and the first error's text, and a bus forwarded as typed
//! events. Each exists once so every part fails the same way, with the same one-line reasons.

use std::time::Duration;

use gstreamer as gst;

use gst::prelude::*;

/// A GStreamer element whose plugin is not installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GStreamer element `{0}` is not installed (see the README's package list)")]
pub struct MissingElement(pub String);

/// Makes an element of `factory` with its default properties.
pub fn make(factory: &str) -> Result<gst::Element, MissingElement> {
    make_with(factory, |builder| builder)
}

/// Makes an element of `factory`, letting `configure` name it and set properties first.
pub fn make_with<'a>(
    factory: &'a str,
    configure: impl FnOnce(
        gst::element_factory::ElementBuilder<'a>,
    ) -> gst::element_factory::ElementBuilder<'a>,
) -> Result<gst::Element, MissingElement> {
    configure(gst::ElementFactory::make(factory))
        .build()
        .map_err(|_| MissingElement(factory.to_owned()))
}

/// A `capsfilter` letting only `caps` through.
pub fn capsfilter(caps: &gst::Caps) -> Result<gst::Element, MissingElement> {
    make_with("capsfilter", |b| b.property("caps", caps))
}

/// Adds `elements` to `bin` and links them in order.
pub fn add_chain(
    bin: &impl IsA<gst::Bin>,
    elements: &[&gst::Element],
) -> Result<(), glib::BoolError> {
    bin.add_many(elements.iter().copied())?;
    gst::Element::link_many(elements.iter().copied())
}

/// A std duration as a GStreamer clock time; durations past GStreamer's range (584 years)
/// become its largest time.
pub fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::try_from(d).unwrap_or(gst::ClockTime::MAX)
}

/// Why a pipeline did not preroll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrerollError {
    /// An element failed; GStreamer's message.
    #[error("{0}")]
    Failed(String),
    /// The state change was refused and no element said why.
    #[error("it refused to start")]
    Refused,
    /// It was still not ready when the time given ran out.
    #[error("it was not ready within {} s", .0.as_secs())]
    TimedOut(Duration),
}

/// Sets `pipeline` to `Paused` and waits, at most `timeout`, until it has prerolled. Call it
/// before [`forward_bus`], which takes the messages this waits for.
pub fn preroll(pipeline: &gst::Pipeline, timeout: Duration) -> Result<(), PrerollError> {
    if pipeline.set_state(gst::State::Paused).is_err() {
        return Err(first_error(pipeline).map_or(PrerollError::Refused, PrerollError::Failed));
    }
    wait_async_done(pipeline, timeout)
}

/// Waits, at most `timeout`, for `pipeline` to finish a state change or a flushing seek.
pub fn wait_async_done(pipeline: &gst::Pipeline, timeout: Duration) -> Result<(), PrerollError> {
    let bus = pipeline.bus().expect("pipelines have a bus");
    let msg = bus.timed_pop_filtered(
        clock_time(timeout),
        &[gst::MessageType::AsyncDone, gst::MessageType::Error],
    );
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::AsyncDone(_)) => Ok(()),
        Some(gst::MessageView::Error(err)) => Err(PrerollError::Failed(err.error().to_string())),
        _ => Err(PrerollError::TimedOut(timeout)),
    }
}

/// The first error posted on `pipeline`'s bus, waiting briefly for one that is on its way.
fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    let msg = pipeline.bus()?.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(err.error().to_string()),
        _ => None,
    }
}

/// What a pipeline's bus says that its owner must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// The stream ended.
    Eos,
    /// An element failed.
    Error {
        /// Path of the failing element.
        element: String,
        /// GStreamer's message.
        message: String,
    },
}

/// Hands every EOS and error posted on `pipeline`'s bus to `on_event`, on the thread that
/// posts it; warnings are logged, everything else is dropped.
pub fn forward_bus(pipeline: &gst::Pipeline, on_event: impl Fn(BusEvent) + Send + Sync + 'static) {
    let name = pipeline.name();
    let bus = pipeline.bus().expect("pipelines have a bus");
    bus.set_sync_handler(move |_, msg| {
        let element = || {
            msg.src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        match msg.view() {
            gst::MessageView::Eos(_) => on_event(BusEvent::Eos),
            gst::MessageView::Error(err) => on_event(BusEvent::Error {
                element: element(),
                message: err.error().to_string(),
            }),
            gst::MessageView::Warning(w) => {
                tracing::warn!(pipeline = %name, element = %element(), message = %w.error(), "GStreamer warning");
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

/// Makes a closed `valve` open for the EOS that ends its pipeline: a closed valve drops events
/// too, and stopping waits for every branch to end (no frame follows an EOS).
pub fn open_valve_on_eos(valve: &gst::Element) {
    let weak = valve.downgrade();
    if let Some(pad) = valve.static_pad("sink") {
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let eos = info
                .event()
                .is_some_and(|e| e.type_() == gst::EventType::Eos);
            if let (true, Some(valve)) = (eos, weak.upgrade()) {
                valve.set_property("drop", false);
            }
            gst::PadProbeReturn::Ok
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_missing_element_is_named() {
        gst::init().unwrap();
        let error = make("cowatch-no-such-element").unwrap_err();
        assert!(
            error.to_string().contains("`cowatch-no-such-element`"),
            "{error}"
        );
        assert!(make_with("queue", |b| b.name("q")).is_ok());
    }

    #[test]
    fn clock_time_saturates() {
        assert_eq!(
            clock_time(Duration::from_millis(1500)),
            gst::ClockTime::from_mseconds(1500)
        );
        assert_eq!(clock_time(Duration::MAX), gst::ClockTime::MAX);
    }

    #[test]
    fn preroll_gives_the_first_error() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch("filesrc location=/nonexistent/cowatch ! fakesink")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let error = preroll(&pipeline, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(error, PrerollError::Failed(_)), "{error:?}");
        let _ = pipeline.set_state(gst::State::Null);
    }

    #[test]
    fn the_bus_forwards_eos() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch("audiotestsrc num-buffers=2 ! fakesink")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        preroll(&pipeline, Duration::from_secs(5)).unwrap();
        let (tx, rx) = mpsc::channel();
        forward_bus(&pipeline, move |event| {
            let _ = tx.send(event);
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let event = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(event, BusEvent::Eos);
        let _ = pipeline.set_state(gst::State::Null);
    }
}
