//! Ducking: the movie gets quieter while the streamer talks, and comes back when they stop.

use std::time::Duration;

/// Mic loudness above which we consider the streamer to be talking.
pub const VOICE_THRESHOLD_DB: f64 = -45.0;

/// How long the movie stays ducked after the last word, so it does not pump between words.
const HOLD: Duration = Duration::from_millis(600);

/// Time for the movie to go down (fast, so the first word is heard) and back up (slow).
const ATTACK: Duration = Duration::from_millis(80);
const RELEASE: Duration = Duration::from_millis(700);

/// Smooth gain follower driven by the mic's loudness.
#[derive(Debug, Clone)]
pub struct Ducker {
    /// Movie gain while talking (linear), from the configured amount in dB.
    ducked_gain: f64,
    /// Current gain applied to the movie.
    gain: f64,
    /// Time since the mic last carried voice.
    since_voice: Duration,
}

impl Ducker {
    /// A ducker that lowers the movie by `amount_db` (e.g. 12.0) while the mic carries voice.
    pub fn new(amount_db: f64) -> Self {
        Self {
            ducked_gain: 10f64.powf(-amount_db.abs() / 20.0),
            gain: 1.0,
            since_voice: HOLD,
        }
    }

    /// Changes how deep the movie ducks; takes effect over the usual ramp.
    pub fn set_amount(&mut self, amount_db: f64) {
        self.ducked_gain = 10f64.powf(-amount_db.abs() / 20.0);
    }

    /// Advances by `dt` with the mic at `mic_db` dBFS (`None`: muted or absent); returns the
    /// movie gain to apply.
    pub fn update(&mut self, mic_db: Option<f64>, dt: Duration) -> f64 {
        if mic_db.is_some_and(|db| db > VOICE_THRESHOLD_DB) {
            self.since_voice = Duration::ZERO;
        } else {
            self.since_voice = (self.since_voice + dt).min(HOLD);
        }
        let (target, ramp) = if self.since_voice < HOLD {
            (self.ducked_gain, ATTACK)
        } else {
            (1.0, RELEASE)
        };
        // Linear ramps: the whole swing takes exactly `ramp`, whatever the tick rate.
        let step = (1.0 - self.ducked_gain) * (dt.as_secs_f64() / ramp.as_secs_f64());
        let delta = target - self.gain;
        self.gain = if delta.abs() <= step {
            target
        } else {
            self.gain + step.copysign(delta)
        };
        self.gain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(50);

    #[test]
    fn voice_ducks_the_movie_and_silence_brings_it_back() {
        let mut d = Ducker::new(12.0);
        assert_eq!(d.update(Some(-80.0), TICK), 1.0);
        let mut gain = 1.0;
        for _ in 0..10 {
            gain = d.update(Some(-20.0), TICK);
        }
        assert!((gain - 10f64.powf(-12.0 / 20.0)).abs() < 0.01, "{gain}");
        // Held through a short pause between words.
        for _ in 0..5 {
            gain = d.update(Some(-80.0), TICK);
        }
        assert!(gain < 0.3, "{gain}");
        for _ in 0..60 {
            gain = d.update(None, TICK);
        }
        assert_eq!(gain, 1.0);
    }
}
