//! An offer flood and a `/healthz` watch: many WHEP POSTs of real offers at a steady rate, each
//! timed to its answer, while `/healthz` is read at a fixed period and each reading timed. No
//! session is kept: an answered offer is left to the server to time out (its viewer never
//! connects), as a hostile or broken client would leave it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::viewer::Offer;
use crate::tools::http;
use crate::tools::probe::Whep;

/// Distinct offers made up front and sent round robin: each has its own certificate and ICE
/// credentials, as different browsers would; making one per POST would measure str0m.
const DISTINCT_OFFERS: usize = 32;

/// What the flood got back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodReport {
    /// POSTs sent.
    pub posts: usize,
    /// Answers by HTTP status; `"none"`: no answer within the client's timeout (10 s).
    pub statuses: BTreeMap<String, usize>,
    /// Slowest answer, ms.
    pub slowest_answer_ms: f64,
    /// Seconds from the first POST to the last answer.
    pub seconds: f64,
}

/// `n` real offers from viewers on `bind` whose ports are never bound: nothing answers the
/// server's ICE checks, as after a tab closed (or from a squatter).
pub fn dead_offers(bind: IpAddr, n: usize) -> anyhow::Result<Vec<String>> {
    let now = Instant::now();
    (0..n)
        .map(|i| {
            let local = SocketAddr::new(bind, 40_000 + (i % 20_000) as u16);
            Offer::new(local, now).map(|offer| offer.sdp)
        })
        .collect()
}

/// POSTs `posts` offers to `whep`, evenly over `over`, from viewers' addresses on `bind`.
pub async fn flood(
    whep: &str,
    bind: IpAddr,
    posts: usize,
    over: Duration,
) -> anyhow::Result<FloodReport> {
    let whep = std::sync::Arc::new(Whep::open(whep).await?);
    let offers = dead_offers(bind, DISTINCT_OFFERS.min(posts.max(1)))?;
    let every = over.div_f64(posts.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..posts {
        tokio::time::sleep_until(start + every * i as u32).await;
        let whep = whep.clone();
        let sdp = offers[i % offers.len()].clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let status = whep.offer(&sdp).await.ok().map(|answer| answer.status);
            (status, sent.elapsed())
        });
    }
    let mut report = FloodReport {
        posts,
        ..FloodReport::default()
    };
    while let Some(done) = tasks.join_next().await {
        let (status, took) = done.context("a POST task panicked")?;
        let key = status.map_or("none".to_owned(), |s| s.to_string());
        *report.statuses.entry(key).or_default() += 1;
        report.slowest_answer_ms = report.slowest_answer_ms.max(took.as_secs_f64() * 1000.0);
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads `url` every `every` until `stop` is cancelled; returns each reading's time in ms, a
/// failed or timed-out one (5 s) as infinity.
pub async fn health_latencies(
    url: &str,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<f64>> {
    health_latencies_owned(url.to_owned(), every, stop).await
}

/// [`health_latencies`] owning its URL, for a spawned task.
pub(super) async fn health_latencies_owned(
    url: String,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<f64>> {
    let client = http::local()?;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(samples),
            _ = ticks.tick() => {}
        }
        let sent = Instant::now();
        let read = async {
            let response = client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?;
            response.bytes().await
        };
        samples.push(match read.await {
            Ok(_) => sent.elapsed().as_secs_f64() * 1000.0,
            Err(_) => f64::INFINITY,
        });
    }
}
