//! Which rendition one viewer should receive, from str0m's estimate of its link (TWCC) and
//! the cap it picked in the page's menu. Sans-IO: every input carries `now`.
//!
//! The rules are the ones viewers of Twitch and YouTube live with, made explicit:
//! - **Down fast.** When the estimate stays below what the current rendition needs for
//!   [`SHORT_FOR`], go straight to the highest rendition the estimate carries: a frozen
//!   picture costs more than a softer one.
//! - **Up slowly, one step at a time.** Only after the estimate has carried the next rendition
//!   up with margin for [`UP_AFTER`]. A viewer on a lower rendition sends too little for the
//!   estimate to grow past it (str0m caps it at 1.5 times what is acknowledged, and its own
//!   periodic probes need the send rate under 65 % of the estimate), so every
//!   [`PROBE_EVERY`] without headroom its link is probed ([`Adapt::poll_probe`]): str0m's
//!   estimator restarts from the current estimate, which sends its initial probes at 3 and
//!   6 times it, and a link that has cleared shows it within a second.
//! - **Learn from a failed step up.** Falling back within [`UP_AFTER`] of a step up doubles
//!   the wait before the next try, up to [`UP_AFTER_MAX`]; a step up that holds resets it.
//! - **Heavy loss is a fact, not a hint.** When TWCC feedback shows at least [`HEAVY_LOSS`]
//!   of a second's packets lost, the link carries at most what arrived: that caps the
//!   estimate, so a receiver whose feedback the estimator digests slowly (webrtc-rs: its
//!   estimate stayed at 4–6 Mbit/s for 1.5 s of 60 % loss on a 1 Mbit/s link) is moved too.
//! - **Trust a step up for a moment.** For [`UP_GRACE`] after stepping up, a short estimate
//!   does not count: str0m's estimator cuts to 0.85 times the *acknowledged* rate on a delay
//!   spike, and right after a step up that rate is still the lower rendition's (seen on a busy
//!   machine: up at 5 Mbit/s, an estimate of 1.4 Mbit/s a moment later, down again). The link
//!   has just carried the higher rate through [`UP_AFTER`] of headroom.
//! - **The menu is a cap.** A viewer on `360p` never gets more; lowering the cap switches at
//!   once, raising it switches at once when the estimate already carries it, else as soon as
//!   a probe shows headroom (within [`EAGER_FOR`]; the viewer asked for it, so no
//!   [`UP_AFTER`] wait).

use std::time::{Duration, Instant};

use super::quality::Quality;
use super::stream::RenditionId;

/// How long the estimate must stay short before stepping down.
pub const SHORT_FOR: Duration = Duration::from_millis(1000);
/// How long the estimate must carry the next step up before taking it.
pub const UP_AFTER: Duration = Duration::from_secs(10);
/// The longest wait before stepping up again, after repeated failed tries.
pub const UP_AFTER_MAX: Duration = Duration::from_secs(60);
/// A second's loss at or above this caps the estimate at what arrived.
pub const HEAVY_LOSS: f32 = 0.2;
/// How long after a step up a short estimate is not believed.
pub const UP_GRACE: Duration = Duration::from_secs(2);
/// How long after raising its cap a viewer steps up on the first sign of headroom.
pub const EAGER_FOR: Duration = Duration::from_secs(5);
/// How often a viewer below its cap, with no headroom seen, has its link probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(4);
/// The estimate must exceed a rendition's need by this factor before we step up to it.
const UP_MARGIN: f64 = 1.15;
/// Audio and RTP/SRTP overhead on top of a rendition's video bitrate: Opus at 128 kbit/s,
/// and headers are about 5 % of 1200-byte packets; rounded up.
const AUDIO_BPS: u64 = 140_000;
const OVERHEAD: f64 = 1.08;
/// What the BWE probes for, above the need of the highest rendition allowed: room to see
/// headroom without flooding a link that only just carries it.
const PROBE_FACTOR: f64 = 1.3;

/// One rendition a viewer can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which one.
    pub id: RenditionId,
    /// Its label (`720p`).
    pub name: String,
    /// Its lines.
    pub height: u32,
    /// What the link must carry for it (video, audio, overhead), in bit/s.
    pub need_bps: u64,
}

impl Step {
    /// A rendition of `height` lines whose encoder targets `video_kbps`.
    pub fn new(id: RenditionId, name: &str, height: u32, video_kbps: u32) -> Self {
        let video = u64::from(video_kbps) * 1000;
        Self {
            id,
            name: name.to_string(),
            height,
            need_bps: ((video + AUDIO_BPS) as f64 * OVERHEAD) as u64,
        }
    }
}

/// One viewer's choice of rendition.
#[derive(Debug)]
pub struct Adapt {
    /// The renditions of its codec, highest first.
    ladder: Vec<Step>,
    quality: Quality,
    /// What it receives, or is switching to: an index in `ladder`.
    current: usize,
    /// The latest estimate, in bit/s.
    estimate: Option<u64>,
    /// What arrived of the current rendition over the last second of heavy loss, in bit/s.
    loss_cap: Option<u64>,
    /// Since when the estimate has been below the current rendition's need.
    short_since: Option<Instant>,
    /// Since when the estimate has carried the next step up.
    headroom_since: Option<Instant>,
    /// The wait before a step up: [`UP_AFTER`], doubled after each failed try.
    up_after: Duration,
    /// When it last stepped up.
    last_up: Option<Instant>,
    /// When it last moved down, or its link was last probed.
    last_probe: Option<Instant>,
    /// Until when headroom moves it up at once (it raised its cap).
    eager_until: Option<Instant>,
}

impl Adapt {
    /// A viewer on `ladder` (at least one step, highest first), starting on `start`.
    pub fn new(mut ladder: Vec<Step>, start: RenditionId) -> Self {
        ladder.sort_by_key(|s| std::cmp::Reverse(s.need_bps));
        let current = ladder.iter().position(|s| s.id == start).unwrap_or(0);
        Self {
            ladder,
            quality: Quality::Auto,
            current,
            estimate: None,
            loss_cap: None,
            short_since: None,
            headroom_since: None,
            up_after: UP_AFTER,
            last_up: None,
            last_probe: None,
            eager_until: None,
        }
    }

    /// What it receives (or is switching to).
    pub fn current(&self) -> &Step {
        &self.ladder[self.current]
    }

    /// Its choice in the menu.
    pub fn quality(&self) -> Quality {
        self.quality
    }

    /// The latest estimate, in bit/s.
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// The highest step the cap allows (the lowest step if the cap is below every one).
    fn top(&self) -> usize {
        self.ladder
            .iter()
            .position(|s| self.quality.allows(s.height))
            .unwrap_or(self.ladder.len() - 1)
    }

    /// The highest step at or below the cap that `estimate` carries (the lowest if none).
    fn fitting(&self, estimate: u64, margin: f64) -> usize {
        (self.top()..self.ladder.len())
            .find(|&i| estimate as f64 >= self.ladder[i].need_bps as f64 * margin)
            .unwrap_or(self.ladder.len() - 1)
    }

    /// The viewer picked `quality` at `now`: the step to move to now, if any.
    pub fn set_quality(&mut self, now: Instant, quality: Quality) -> Option<RenditionId> {
        self.quality = quality;
        self.headroom_since = None;
        let top = self.top();
        let target = if self.current < top {
            top
        } else if self.current > top {
            // Raised cap: go as high as the link is known to carry, no further.
            match self.estimate {
                Some(e) => self.fitting(e, UP_MARGIN).max(top).min(self.current),
                None => self.current,
            }
        } else {
            self.current
        };
        let moved = self.move_to(now, target);
        if target > top {
            // Not known to carry more yet: probe now, and take the first headroom seen.
            self.last_probe = None;
            self.eager_until = Some(now + EAGER_FOR);
        }
        moved
    }

    /// TWCC feedback says `fraction` of the last second's packets were lost, at `now`.
    pub fn on_loss(&mut self, now: Instant, fraction: f32) {
        self.loss_cap = (fraction >= HEAVY_LOSS).then(|| {
            let need = self.ladder[self.current].need_bps as f64;
            (need * f64::from(1.0 - fraction.min(1.0))) as u64
        });
        if let Some(estimate) = self.estimate {
            self.on_estimate(now, estimate);
        }
    }

    /// What the link is believed to carry: the estimate, capped by heavy loss.
    fn carried(&self) -> Option<u64> {
        let estimate = self.estimate?;
        Some(self.loss_cap.map_or(estimate, |cap| cap.min(estimate)))
    }

    /// str0m has a new estimate of the link at `now`.
    pub fn on_estimate(&mut self, now: Instant, estimate: u64) {
        self.estimate = Some(estimate);
        if !self.has_choice() {
            return;
        }
        let bps = self.carried().unwrap_or(estimate);
        let trusting = self.last_up.is_some_and(|t| now < t + UP_GRACE);
        if bps < self.ladder[self.current].need_bps && !trusting {
            self.short_since.get_or_insert(now);
        } else {
            self.short_since = None;
        }
        let up = self.current.checked_sub(1).filter(|&i| i >= self.top());
        match up {
            Some(i) if bps as f64 >= self.ladder[i].need_bps as f64 * UP_MARGIN => {
                self.headroom_since.get_or_insert(now);
            }
            _ => self.headroom_since = None,
        }
    }

    /// The step to move to at `now`, if the estimate says so.
    pub fn poll(&mut self, now: Instant) -> Option<RenditionId> {
        let estimate = self.carried()?;
        if self
            .short_since
            .is_some_and(|since| now >= since + SHORT_FOR)
        {
            let target = self.fitting(estimate, 1.0);
            if target > self.current {
                return self.move_to(now, target);
            }
            // Already as low as it goes: nothing to do until the next estimate re-arms it.
            self.short_since = None;
        }
        let eager = self.eager_until.is_some_and(|t| now < t);
        let wait = if eager { Duration::ZERO } else { self.up_after };
        if self.headroom_since.is_some_and(|since| now >= since + wait) {
            if self.current > self.top() {
                return self.move_to(now, self.current - 1);
            }
            self.headroom_since = None;
        }
        None
    }

    fn move_to(&mut self, now: Instant, target: usize) -> Option<RenditionId> {
        if target == self.current {
            return None;
        }
        if target > self.current {
            // A step up that fell back at once: wait longer before the next try.
            let failed = self.last_up.is_some_and(|t| now < t + UP_AFTER);
            self.up_after = if failed {
                (self.up_after * 2).min(UP_AFTER_MAX)
            } else {
                UP_AFTER
            };
            self.last_probe = Some(now);
        } else {
            self.last_up = Some(now);
        }
        self.current = target;
        self.loss_cap = None;
        self.short_since = None;
        self.headroom_since = None;
        self.eager_until = None;
        Some(self.ladder[target].id)
    }

    /// Whether the link should be probed (below the cap, no headroom in sight), and from
    /// when (`None`: at once).
    fn probe_due(&self) -> Option<Option<Instant>> {
        let below = self.current > self.top() && self.headroom_since.is_none();
        below.then(|| self.last_probe.map(|t| t + PROBE_EVERY))
    }

    /// The estimate to restart the viewer's estimator from at `now`, when its link should be
    /// probed for headroom.
    pub fn poll_probe(&mut self, now: Instant) -> Option<u64> {
        let due = self.probe_due()?;
        let estimate = self.estimate?;
        if due.is_some_and(|due| now < due) {
            return None;
        }
        self.last_probe = Some(now);
        Some(estimate)
    }

    /// When [`Adapt::poll`] or [`Adapt::poll_probe`] may next have something to say.
    pub fn deadline(&self) -> Option<Instant> {
        let down = self.short_since.map(|t| t + SHORT_FOR);
        let wait = if self.eager_until.is_some() {
            Duration::ZERO
        } else {
            self.up_after
        };
        let up = self.headroom_since.map(|t| t + wait);
        let probe = self
            .probe_due()
            .flatten()
            .filter(|_| self.estimate.is_some());
        [down, up, probe].into_iter().flatten().min()
    }

    /// What the BWE should probe for, in bit/s: a little above the highest rendition the cap
    /// allows, so headroom for a step up can show.
    pub fn desired_bps(&self) -> u64 {
        (self.ladder[self.top()].need_bps as f64 * PROBE_FACTOR) as u64
    }

    /// Whether there is anything to choose between.
    pub fn has_choice(&self) -> bool {
        self.ladder.len() > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIGH: RenditionId = RenditionId(0);
    const LOW: RenditionId = RenditionId(2);
    const MBIT: u64 = 1_000_000;

    fn ladder() -> Adapt {
        Adapt::new(
            vec![
                Step::new(LOW, "360p", 360, 600),
                Step::new(HIGH, "720p", 720, 2500),
            ],
            HIGH,
        )
    }

    /// Feeds `bps` every 100 ms for `d`, polling after each; the first switch and when.
    fn feed(
        a: &mut Adapt,
        t: &mut Instant,
        d: Duration,
        bps: u64,
    ) -> Option<(RenditionId, Instant)> {
        let end = *t + d;
        let mut first = None;
        while *t < end {
            *t += Duration::from_millis(100);
            a.on_estimate(*t, bps);
            if let Some(id) = a.poll(*t) {
                first.get_or_insert((id, *t));
            }
        }
        first
    }

    #[test]
    fn steps_down_a_second_after_the_estimate_falls_short_and_not_on_a_dip() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = ladder();
        assert_eq!(feed(&mut a, &mut t, Duration::from_secs(5), 4 * MBIT), None);
        // A dip shorter than SHORT_FOR changes nothing.
        assert_eq!(feed(&mut a, &mut t, Duration::from_millis(500), MBIT), None);
        assert_eq!(feed(&mut a, &mut t, Duration::from_secs(1), 4 * MBIT), None);
        let dropped = t;
        let (id, at) = feed(&mut a, &mut t, Duration::from_secs(3), MBIT).expect("no step down");
        assert_eq!(id, LOW);
        assert!(
            at - dropped <= SHORT_FOR + Duration::from_millis(100),
            "{:?}",
            at - dropped
        );
        assert_eq!(a.current().name, "360p");
    }

    #[test]
    fn steps_up_after_ten_seconds_of_headroom_and_waits_longer_after_a_failed_try() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = ladder();
        feed(&mut a, &mut t, Duration::from_secs(2), MBIT);
        assert_eq!(a.current().id, LOW);
        assert_eq!(
            a.desired_bps(),
            (a.ladder[0].need_bps as f64 * PROBE_FACTOR) as u64,
            "it probes for 720p while on 360p"
        );
        // Headroom just below the margin is not headroom.
        assert_eq!(
            feed(&mut a, &mut t, Duration::from_secs(15), 3 * MBIT),
            None
        );
        let freed = t;
        let (id, at) = feed(&mut a, &mut t, Duration::from_secs(15), 4 * MBIT).expect("no step up");
        assert_eq!(id, HIGH);
        let waited = at - freed;
        assert!(
            (UP_AFTER..UP_AFTER + Duration::from_millis(300)).contains(&waited),
            "{waited:?}"
        );
        // The link was not that good after all: down, and the next try waits twice as long.
        let (id, _) = feed(&mut a, &mut t, Duration::from_secs(2), MBIT).expect("no step down");
        assert_eq!(id, LOW);
        let freed = t;
        let (_, at) = feed(&mut a, &mut t, Duration::from_secs(30), 4 * MBIT).expect("no retry");
        assert!(at - freed >= UP_AFTER * 2, "{:?}", at - freed);
    }

    #[test]
    fn a_cap_holds_whatever_the_estimate_and_raising_it_uses_known_headroom() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = ladder();
        feed(&mut a, &mut t, Duration::from_secs(1), 5 * MBIT);
        assert_eq!(
            a.set_quality(t, Quality::Max(360)),
            Some(LOW),
            "lowering the cap is at once"
        );
        assert_eq!(
            feed(&mut a, &mut t, Duration::from_secs(30), 5 * MBIT),
            None
        );
        assert_eq!(a.current().id, LOW);
        assert!(
            a.desired_bps() < 2 * MBIT,
            "no probing for what it may not get"
        );
        assert_eq!(
            a.set_quality(t, Quality::Auto),
            Some(HIGH),
            "the link carries 720p"
        );
        assert_eq!(a.quality().to_string(), "auto");
        // Raised cap without headroom: stay, and step up later as usual.
        a.set_quality(t, Quality::Max(360));
        feed(&mut a, &mut t, Duration::from_secs(1), MBIT);
        assert_eq!(a.set_quality(t, Quality::Max(720)), None);
        // A cap below every rendition gets the lowest.
        assert_eq!(a.set_quality(t, Quality::Max(180)), None);
        assert_eq!(a.current().id, LOW);
    }

    #[test]
    fn a_short_estimate_right_after_a_step_up_is_not_believed() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = ladder();
        feed(&mut a, &mut t, Duration::from_secs(2), MBIT);
        let up_at = loop {
            if let Some((id, at)) = feed(&mut a, &mut t, Duration::from_millis(100), 4 * MBIT) {
                assert_eq!(id, HIGH);
                break at;
            }
            assert!(t - t0 < Duration::from_secs(15), "never stepped up");
        };
        // The estimator cuts to what was acknowledged at 360p: a spike, not the link.
        assert_eq!(
            feed(&mut a, &mut t, UP_GRACE - Duration::from_millis(200), MBIT),
            None
        );
        assert_eq!(feed(&mut a, &mut t, Duration::from_secs(3), 4 * MBIT), None);
        // Still short once the grace is over: that is the link.
        let (id, down_at) = feed(&mut a, &mut t, Duration::from_secs(3), MBIT).expect("down");
        assert_eq!(id, LOW);
        assert!(down_at - up_at > UP_GRACE);
    }

    #[test]
    fn raising_the_cap_probes_at_once_and_takes_the_first_headroom() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = ladder();
        a.set_quality(t, Quality::Max(360));
        // Capped, it sends 360p and the estimate stays near what that needs.
        feed(&mut a, &mut t, Duration::from_secs(20), 1_200_000);
        assert_eq!(a.poll_probe(t), None, "no probing for what it may not get");
        assert_eq!(
            a.set_quality(t, Quality::Auto),
            None,
            "not known to carry 720p"
        );
        assert_eq!(a.poll_probe(t), Some(1_200_000), "probed at once");
        let (id, at) = feed(&mut a, &mut t, Duration::from_secs(3), 5 * MBIT).expect("up");
        assert_eq!(id, HIGH);
        assert!(
            at - t0 < Duration::from_secs(21),
            "no 10 s wait: {:?}",
            at - t0
        );
    }

    #[test]
    fn heavy_loss_moves_it_down_even_while_the_estimate_lags() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = ladder();
        feed(&mut a, &mut t, Duration::from_secs(2), 6 * MBIT);
        // 10 % loss is the estimator's business.
        a.on_loss(t, 0.1);
        assert_eq!(feed(&mut a, &mut t, Duration::from_secs(2), 6 * MBIT), None);
        // 60 % lost: at most 40 % of 720p's need arrived, whatever the estimate says.
        let lossy = t;
        a.on_loss(t, 0.6);
        let (id, at) =
            feed(&mut a, &mut t, Duration::from_secs(2), 6 * MBIT).expect("no step down");
        assert_eq!(id, LOW);
        assert!(at - lossy <= SHORT_FOR + Duration::from_millis(100));
        assert_eq!(
            a.estimate(),
            Some(6 * MBIT),
            "the estimate shown is str0m's"
        );
    }

    #[test]
    fn a_single_rendition_never_moves() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut a = Adapt::new(vec![Step::new(HIGH, "720p", 720, 2500)], HIGH);
        assert!(!a.has_choice());
        assert_eq!(feed(&mut a, &mut t, Duration::from_secs(5), 100_000), None);
        assert_eq!(a.set_quality(t, Quality::Max(360)), None);
    }
}
