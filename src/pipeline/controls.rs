//! What a control may ask, checked once, here, before anything is applied: the movie volume
//! and ducking ranges, seek positions, switches of devices that may not be there, and the
//! go-live plan. A refused argument is [`PipelineError::Invalid`], one line saying what is
//! allowed.

use std::ops::RangeInclusive;
use std::time::Duration;

use gstreamer as gst;

use super::layout::Layout;
use super::source::{MicSource, MovieSource, WebcamSource};
use super::{PipelineError, Settings};

/// The movie volume the streamer may set: silent to a 1.5× boost (before ducking).
pub const VOLUME_RANGE: RangeInclusive<f64> = 0.0..=1.5;

/// How many dB the movie may duck while the mic carries voice.
pub const DUCK_DB_RANGE: RangeInclusive<f64> = 0.0..=60.0;

/// A change of the movie's sound, checked as a whole: a bad value changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioChange {
    /// The new movie volume, in [`VOLUME_RANGE`].
    pub volume: Option<f64>,
    /// The new ducking depth, in [`DUCK_DB_RANGE`].
    pub duck_db: Option<f64>,
}

impl AudioChange {
    /// Both values checked before either is applied; at least one must be given.
    pub fn checked(volume: Option<f64>, duck_db: Option<f64>) -> Result<Self, PipelineError> {
        if volume.is_none() && duck_db.is_none() {
            return Err(invalid("give volume and/or duck_db".into()));
        }
        if let Some(v) = volume
            && !VOLUME_RANGE.contains(&v)
        {
            return Err(invalid(format!(
                "volume {v} is out of range: use 0.0 to 1.5"
            )));
        }
        if let Some(db) = duck_db
            && !DUCK_DB_RANGE.contains(&db)
        {
            return Err(invalid(format!(
                "ducking of {db} dB is out of range: use 0 to 60"
            )));
        }
        Ok(Self { volume, duck_db })
    }
}

/// `position_s` as a time in the movie: a finite number of seconds, 0 or more.
pub fn seek_seconds(position_s: f64) -> Result<Duration, PipelineError> {
    if !position_s.is_finite() || position_s < 0.0 {
        return Err(invalid(format!(
            "position {position_s} s is not a time in the movie: use a number of seconds, 0 or more"
        )));
    }
    Duration::try_from_secs_f64(position_s).map_err(|_| past_any_end(position_s))
}

/// `position` as GStreamer's time, which ends after 584 years.
pub fn seek_position(position: Duration) -> Result<gst::ClockTime, PipelineError> {
    gst::ClockTime::try_from(position).map_err(|_| past_any_end(position.as_secs_f64()))
}

/// Furthest seek into a movie of unknown length (a live stream, a file without an index): no
/// movie is longer, and a position past it would only confuse the demuxer.
pub const MAX_SEEK_UNKNOWN_LENGTH: Duration = Duration::from_secs(24 * 3600);

/// Refuses a position past the end of a movie `duration` long, or past
/// [`MAX_SEEK_UNKNOWN_LENGTH`] when the length is unknown.
pub fn within_movie(
    position: gst::ClockTime,
    duration: Option<gst::ClockTime>,
) -> Result<(), PipelineError> {
    match duration {
        Some(duration) if position > duration => Err(invalid(format!(
            "position {:.1} s is past the end of the movie ({:.1} s)",
            position.seconds_f64(),
            duration.seconds_f64()
        ))),
        None if Duration::from(position) > MAX_SEEK_UNKNOWN_LENGTH => Err(invalid(format!(
            "position {:.1} s is past where a movie of unknown length can be sought (at most {} h)",
            position.seconds_f64(),
            MAX_SEEK_UNKNOWN_LENGTH.as_secs() / 3600
        ))),
        _ => Ok(()),
    }
}

fn past_any_end(position_s: f64) -> PipelineError {
    invalid(format!(
        "position {position_s:.1} s is past the end of any movie"
    ))
}

/// Which devices the pipeline was started with; none can appear later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// A webcam is configured.
    pub webcam: bool,
    /// A mic is configured.
    pub mic: bool,
}

impl Devices {
    /// The devices of `settings`.
    pub fn of(settings: &Settings) -> Self {
        Self {
            webcam: matches!(settings.webcam, WebcamSource::Description(_)),
            mic: matches!(settings.mic, MicSource::Description(_)),
        }
    }

    /// Turning the webcam on needs one; turning it off always works (it shows the slate).
    pub fn check_webcam(self, on: bool) -> Result<(), PipelineError> {
        if on && !self.webcam {
            return Err(invalid(
                "no webcam is configured (start cowatch with --webcam)".into(),
            ));
        }
        Ok(())
    }

    /// Muting or unmuting needs a mic.
    pub fn check_mic(self) -> Result<(), PipelineError> {
        if !self.mic {
            return Err(invalid(
                "no mic is configured (start cowatch with --mic)".into(),
            ));
        }
        Ok(())
    }
}

/// What going live changes, applied in this order before the movie plays; `None` leaves a
/// part as it is.
#[derive(Debug, Clone, Default)]
pub struct GoLivePlan {
    /// Another movie to load first.
    pub movie: Option<MovieSource>,
    /// The layout to switch to.
    pub layout: Option<Layout>,
    /// Webcam on or off.
    pub webcam: Option<bool>,
    /// Mic on (open) or off (muted).
    pub mic: Option<bool>,
}

impl GoLivePlan {
    /// The plan, checked before anything changes. A switch for a device that is not there:
    /// "off" is already true and is dropped, "on" cannot be and refuses the whole plan.
    pub fn checked(self, devices: Devices) -> Result<Self, PipelineError> {
        if self.webcam == Some(true) {
            devices.check_webcam(true)?;
        }
        if self.mic == Some(true) {
            devices.check_mic()?;
        }
        Ok(Self {
            webcam: self.webcam.filter(|_| devices.webcam),
            mic: self.mic.filter(|_| devices.mic),
            ..self
        })
    }
}

fn invalid(message: String) -> PipelineError {
    PipelineError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(result: Result<impl std::fmt::Debug, PipelineError>) -> String {
        match result {
            Err(PipelineError::Invalid(message)) => message,
            other => panic!("expected a refused argument, got {other:?}"),
        }
    }

    #[test]
    fn audio_is_checked_as_a_whole() {
        assert_eq!(
            AudioChange::checked(Some(1.5), Some(0.0)).unwrap(),
            AudioChange {
                volume: Some(1.5),
                duck_db: Some(0.0)
            }
        );
        assert!(refusal(AudioChange::checked(None, None)).contains("volume and/or duck_db"));
        assert!(refusal(AudioChange::checked(Some(9.0), None)).contains("0.0 to 1.5"));
        assert!(refusal(AudioChange::checked(Some(0.5), Some(99.0))).contains("0 to 60"));
        refusal(AudioChange::checked(Some(f64::NAN), None));
        refusal(AudioChange::checked(None, Some(-1.0)));
    }

    #[test]
    fn seek_positions_never_panic() {
        assert_eq!(seek_seconds(3.5).unwrap(), Duration::from_millis(3500));
        for bad in [-5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(refusal(seek_seconds(bad)).contains("0 or more"), "{bad}");
        }
        assert!(refusal(seek_seconds(1e20)).contains("past the end"));
        let far = seek_seconds(1e12).unwrap();
        assert!(refusal(seek_position(far)).contains("past the end"));
        let ten = gst::ClockTime::from_seconds(10);
        within_movie(ten, Some(ten)).unwrap();
        within_movie(ten, None).unwrap();
        // A movie of unknown length still has a furthest point.
        let day = gst::ClockTime::from_seconds(24 * 3600);
        within_movie(day, None).unwrap();
        let message = refusal(within_movie(day + gst::ClockTime::SECOND, None));
        assert!(message.contains("unknown length"), "{message}");
        for huge in [1e19, 1e18, 1e15] {
            let refused = seek_seconds(huge)
                .and_then(seek_position)
                .and_then(|p| within_movie(p, None));
            assert!(refused.is_err(), "{huge} s was accepted");
        }
        let message = refusal(within_movie(ten, Some(gst::ClockTime::from_seconds(5))));
        assert!(message.contains("past the end"), "{message}");
    }

    /// A plan with only device switches.
    fn switches(webcam: Option<bool>, mic: Option<bool>) -> GoLivePlan {
        GoLivePlan {
            webcam,
            mic,
            ..GoLivePlan::default()
        }
    }

    #[test]
    fn going_live_drops_off_switches_of_absent_devices_and_refuses_on() {
        let none = Devices {
            webcam: false,
            mic: false,
        };
        let plan = switches(Some(false), Some(false)).checked(none).unwrap();
        assert_eq!((plan.webcam, plan.mic), (None, None));
        for plan in [switches(Some(true), None), switches(None, Some(true))] {
            assert!(refusal(plan.checked(none)).contains("is configured"));
        }
        let both = Devices {
            webcam: true,
            mic: true,
        };
        let plan = switches(Some(false), Some(true)).checked(both).unwrap();
        assert_eq!((plan.webcam, plan.mic), (Some(false), Some(true)));
    }
}
