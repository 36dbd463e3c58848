//! Where a new viewer watches: the origin or one of the edges. Sans-IO: the caller passes the
//! loads it knows and `now`; nothing here reads a clock or a socket.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How viewers are spread (`--edge-policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The origin first; an edge only once the origin is full.
    #[default]
    Overflow,
    /// Whichever of the origin and the edges that are up has the fewest viewers.
    LeastLoaded,
}

/// The origin's own load.
#[derive(Debug, Clone, Copy)]
pub struct OriginLoad {
    /// Viewers holding a session on the origin.
    pub viewers: usize,
    /// Its cap (`--max-viewers`).
    pub max: usize,
    /// Its fan-out cannot keep up with the encoder: full, whatever the count says.
    pub saturated: bool,
}

impl OriginLoad {
    fn full(self) -> bool {
        self.saturated || self.viewers >= self.max
    }
}

/// One edge as the choice sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// It answered its last poll and carries our mountpoint.
    pub up: bool,
    /// The page asking has just failed on it: never hand it back at once.
    pub avoid: bool,
    /// Its viewers by Janus plus the viewers sent there that Janus may not count yet.
    pub load: usize,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Play from the origin over WHEP (also when it is full and no edge is up: the page then
    /// hears "full" from WHEP and tries again later).
    Origin,
    /// Play from edge number `n` (an index into the candidates).
    Edge(usize),
}

/// Picks where the next viewer goes. Ties go to the origin (it adds no hop), then to the
/// first edge listed.
pub fn choose(policy: Policy, origin: OriginLoad, edges: &[Candidate]) -> Choice {
    let usable = edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.up && !e.avoid)
        .min_by_key(|(i, e)| (e.load, *i))
        .map(|(i, e)| (i, e.load));
    match (policy, usable) {
        (_, None) => Choice::Origin,
        (Policy::Overflow, Some(_)) if !origin.full() => Choice::Origin,
        (Policy::Overflow, Some((i, _))) => Choice::Edge(i),
        (Policy::LeastLoaded, Some((i, load))) => {
            if !origin.full() && origin.viewers <= load {
                Choice::Origin
            } else {
                Choice::Edge(i)
            }
        }
    }
}

/// How long a viewer sent to an edge is counted before Janus counts it itself: it takes the
/// page a moment to watch, and a poll every [`super::POLL_EVERY`] to see it.
pub const PENDING_FOR: Duration = Duration::from_secs(6);

/// Viewers sent to one edge lately, so that viewers arriving together are spread instead of
/// all going to the edge that looked emptiest at the last poll.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    sent: Vec<Instant>,
}

impl Pending {
    /// One more viewer sent there at `now`.
    pub fn add(&mut self, now: Instant) {
        self.sent.push(now);
    }

    /// Those sent within [`PENDING_FOR`] of `now`.
    pub fn count(&mut self, now: Instant) -> usize {
        self.sent
            .retain(|t| now.saturating_duration_since(*t) < PENDING_FOR);
        self.sent.len()
    }
}

/// What the page is told (`GET /api/placement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// Watch the origin through WHEP.
    Origin,
    /// Watch Janus mountpoint `mountpoint` through the Janus HTTP API at `url`.
    Edge {
        /// The Janus HTTP API base.
        url: String,
        /// The streaming plugin's mountpoint id.
        mountpoint: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Candidate = Candidate {
        up: true,
        avoid: false,
        load: 0,
    };

    fn load(load: usize) -> Candidate {
        Candidate { load, ..UP }
    }

    #[test]
    fn overflow_fills_the_origin_first_then_the_emptiest_edge() {
        let origin = OriginLoad {
            viewers: 0,
            max: 1,
            saturated: false,
        };
        assert_eq!(
            choose(Policy::Overflow, origin, &[load(0), load(0)]),
            Choice::Origin
        );
        let full = OriginLoad {
            viewers: 1,
            max: 1,
            saturated: false,
        };
        assert_eq!(
            choose(Policy::Overflow, full, &[load(3), load(1)]),
            Choice::Edge(1)
        );
        assert_eq!(
            choose(Policy::Overflow, full, &[load(1), load(1)]),
            Choice::Edge(0)
        );
        // Seats to spare, but a fan-out that cannot keep up is full too.
        let saturated = OriginLoad {
            viewers: 0,
            max: 100,
            saturated: true,
        };
        assert_eq!(
            choose(Policy::Overflow, saturated, &[load(3)]),
            Choice::Edge(0)
        );
        assert_eq!(
            choose(Policy::LeastLoaded, saturated, &[load(30)]),
            Choice::Edge(0)
        );
    }

    #[test]
    fn edges_down_or_just_failed_are_never_chosen() {
        let full = OriginLoad {
            viewers: 5,
            max: 5,
            saturated: false,
        };
        let down = Candidate { up: false, ..UP };
        let failed = Candidate { avoid: true, ..UP };
        assert_eq!(
            choose(Policy::Overflow, full, &[down, failed]),
            Choice::Origin
        );
        assert_eq!(
            choose(Policy::LeastLoaded, full, &[down, failed, load(9)]),
            Choice::Edge(2)
        );
        assert_eq!(choose(Policy::Overflow, full, &[]), Choice::Origin);
    }

    #[test]
    fn least_loaded_compares_the_origin_with_the_edges() {
        let origin = OriginLoad {
            viewers: 3,
            max: 100,
            saturated: false,
        };
        assert_eq!(
            choose(Policy::LeastLoaded, origin, &[load(5), load(2)]),
            Choice::Edge(1)
        );
        assert_eq!(
            choose(Policy::LeastLoaded, origin, &[load(5), load(3)]),
            Choice::Origin
        );
        // A full origin is never chosen, however empty the edges are not.
        let full = OriginLoad {
            viewers: 1,
            max: 1,
            saturated: false,
        };
        assert_eq!(
            choose(Policy::LeastLoaded, full, &[load(40)]),
            Choice::Edge(0)
        );
    }

    #[test]
    fn pending_viewers_count_for_a_while_then_not() {
        let start = Instant::now();
        let mut pending = Pending::default();
        pending.add(start);
        pending.add(start + Duration::from_secs(2));
        assert_eq!(pending.count(start + Duration::from_secs(3)), 2);
        assert_eq!(
            pending.count(start + PENDING_FOR + Duration::from_secs(1)),
            1
        );
        assert_eq!(pending.count(start + Duration::from_secs(60)), 0);
    }

    #[test]
    fn the_page_reads_kind_url_and_mountpoint() {
        let edge = Placement::Edge {
            url: "http://198.18.0.1:8088/janus".into(),
            mountpoint: 7,
        };
        assert_eq!(
            serde_json::to_value(&edge).unwrap(),
            serde_json::json!({"kind": "edge", "url": "http://198.18.0.1:8088/janus", "mountpoint": 7})
        );
        assert_eq!(
            serde_json::to_value(Placement::Origin).unwrap(),
            serde_json::json!({"kind": "origin"})
        );
    }
}
