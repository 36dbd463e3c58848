//! What `cowatch receivers` prints: one JSON object with totals (steady viewers and churn
//! viewers apart), the kernel's drops at the receivers, and every viewer.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::snmp::UdpCounters;
use super::viewer::Counts;

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The WHEP endpoint watched.
    pub whep: String,
    /// The address the viewers received on.
    pub bind: IpAddr,
    /// Seconds from the steady viewers' last join to the end.
    pub watched_s: f64,
    /// The viewers that joined first and stayed to the end.
    pub steady: Totals,
    /// The viewers that joined and left during the run.
    pub churn: Totals,
    /// Datagrams the kernel dropped at the receivers' sockets during the run.
    pub kernel: KernelDrops,
    /// The offer flood, when one was asked for.
    pub flood: Option<super::FloodReport>,
    /// `/healthz` response times while watching, when asked for.
    pub health: Option<HealthLatency>,
    /// Every viewer, in joining order.
    pub viewers: Vec<ViewerReport>,
}

/// How fast `/healthz` answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthLatency {
    pub readings: usize,
    /// Readings that failed or took over 5 s.
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl HealthLatency {
    pub(super) fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if samples.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Self {
            readings: samples.len(),
            failed: samples.iter().filter(|s| s.is_infinite()).count(),
            p50_ms: at(50.0),
            p99_ms: at(99.0),
            max_ms: samples.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// How a viewer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Left {
    /// With a WHEP DELETE, as its plan said.
    Delete,
    /// Without a word: its socket closed, the server must notice by itself.
    Vanish,
    /// At the end of the run, with DELETE.
    End,
}

/// One viewer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewerReport {
    pub index: usize,
    /// Joined at the start and meant to stay to the end.
    pub steady: bool,
    /// HTTP status of the POST; `None` when it got no answer at all.
    pub status: Option<u16>,
    /// POST to the whole answer read, ms.
    pub answer_ms: Option<f64>,
    /// ICE and DTLS came up.
    pub connected: bool,
    /// POST to ICE+DTLS up, ms.
    pub connect_ms: Option<f64>,
    /// POST to the first packet of a keyframe, ms.
    pub first_keyframe_ms: Option<f64>,
    /// RTP packets received (authenticated), and their payload bytes.
    pub packets: u64,
    pub bytes: u64,
    pub video_packets: u64,
    pub audio_packets: u64,
    /// Packets never received: gaps in the extended sequence numbers, per SSRC.
    pub lost: u64,
    /// Packets received twice or more.
    pub duplicates: u64,
    /// Packets that start a keyframe.
    pub keyframe_starts: u64,
    /// Datagrams this viewer could not send (its socket refused them).
    pub send_errors: u64,
    /// How it left; `None` when it never had a session.
    pub left: Option<Left>,
    /// Seconds from its start to its end.
    pub watched_s: f64,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl ViewerReport {
    pub(super) fn new(index: usize, steady: bool) -> Self {
        Self {
            index,
            steady,
            status: None,
            answer_ms: None,
            connected: false,
            connect_ms: None,
            first_keyframe_ms: None,
            packets: 0,
            bytes: 0,
            video_packets: 0,
            audio_packets: 0,
            lost: 0,
            duplicates: 0,
            keyframe_starts: 0,
            send_errors: 0,
            left: None,
            watched_s: 0.0,
            error: None,
        }
    }

    /// Copies what the viewer counted.
    pub(super) fn fill(&mut self, counts: &Counts) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        self.connected = counts.connected_after.is_some();
        self.connect_ms = counts.connected_after.map(ms);
        self.first_keyframe_ms = counts.first_keyframe_after.map(ms);
        self.packets = counts.packets;
        self.bytes = counts.bytes;
        self.video_packets = counts.video_packets;
        self.audio_packets = counts.audio_packets;
        self.lost = counts.lost();
        self.duplicates = counts.duplicates();
        self.keyframe_starts = counts.keyframe_starts;
    }
}

/// Sums over a group of viewers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub viewers: usize,
    /// Answers by HTTP status (`"none"`: no answer at all).
    pub statuses: BTreeMap<String, usize>,
    pub connected: usize,
    /// Connected viewers that never saw the start of a keyframe.
    pub connected_without_keyframe: usize,
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub send_errors: u64,
    /// Over the viewers that saw one.
    pub first_keyframe_ms_median: Option<f64>,
    pub first_keyframe_ms_max: Option<f64>,
    /// Viewers that failed, by their reason's first words, e.g. `HTTP 503: the party is full`.
    pub failures: BTreeMap<String, usize>,
}

impl Totals {
    pub(super) fn of<'a>(viewers: impl Iterator<Item = &'a ViewerReport>) -> Self {
        let mut totals = Totals::default();
        let mut first = Vec::new();
        for v in viewers {
            totals.viewers += 1;
            let status = v.status.map_or("none".to_owned(), |s| s.to_string());
            *totals.statuses.entry(status).or_default() += 1;
            totals.connected += usize::from(v.connected);
            if v.connected && v.first_keyframe_ms.is_none() {
                totals.connected_without_keyframe += 1;
            }
            totals.packets += v.packets;
            totals.bytes += v.bytes;
            totals.lost += v.lost;
            totals.duplicates += v.duplicates;
            totals.send_errors += v.send_errors;
            first.extend(v.first_keyframe_ms);
            if let Some(error) = &v.error {
                let reason: String = error.chars().take(60).collect();
                *totals.failures.entry(reason).or_default() += 1;
            }
        }
        first.sort_by(f64::total_cmp);
        totals.first_keyframe_ms_median = first.get(first.len() / 2).copied();
        totals.first_keyframe_ms_max = first.last().copied();
        totals
    }
}

/// The kernel's UDP drop counters in the receivers' network namespace, before and after.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct KernelDrops {
    /// `Udp: RcvbufErrors`: datagrams dropped because a socket's buffer was full.
    pub rcvbuf_errors: u64,
    /// `Udp: InErrors`: every datagram dropped on receipt (buffer full included).
    pub in_errors: u64,
    /// Whether both readings were possible (`/proc/net/snmp` readable).
    pub measured: bool,
}

impl KernelDrops {
    pub(super) fn between(before: Option<UdpCounters>, after: Option<UdpCounters>) -> Self {
        match (before, after) {
            (Some(b), Some(a)) => Self {
                rcvbuf_errors: a.rcvbuf_errors.saturating_sub(b.rcvbuf_errors),
                in_errors: a.in_errors.saturating_sub(b.in_errors),
                measured: true,
            },
            _ => Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_and_sort_out_failures() {
        let mut a = ViewerReport::new(0, true);
        a.status = Some(201);
        a.connected = true;
        a.packets = 10;
        a.lost = 2;
        a.first_keyframe_ms = Some(300.0);
        let mut b = ViewerReport::new(1, true);
        b.status = Some(503);
        b.error = Some("HTTP 503: the party is full (1 viewers)".into());
        let mut c = ViewerReport::new(2, true);
        c.status = Some(201);
        c.connected = true;
        c.first_keyframe_ms = Some(100.0);
        let mut d = ViewerReport::new(3, true);
        d.status = Some(201);
        d.connected = true;
        let totals = Totals::of([a, b, c, d].iter());
        assert_eq!(totals.viewers, 4);
        assert_eq!(totals.connected, 3);
        assert_eq!(totals.connected_without_keyframe, 1);
        assert_eq!(totals.statuses["201"], 3);
        assert_eq!(totals.statuses["503"], 1);
        assert_eq!(totals.packets, 10);
        assert_eq!(totals.lost, 2);
        assert_eq!(totals.first_keyframe_ms_max, Some(300.0));
        assert_eq!(totals.first_keyframe_ms_median, Some(300.0));
        assert_eq!(totals.failures.values().sum::<usize>(), 1);
    }

    #[test]
    fn health_latency_ranks_failures_last() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        samples[0] = f64::INFINITY;
        let h = HealthLatency::of(samples);
        assert_eq!(h.readings, 100);
        assert_eq!(h.failed, 1);
        assert_eq!(h.p50_ms, 51.0);
        assert_eq!(h.p99_ms, 100.0);
        assert!(h.max_ms.is_infinite());
    }
}
