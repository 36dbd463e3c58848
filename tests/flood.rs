//! An offer flood: 1,000 WHEP POSTs of real offers in 10 s while viewers watch and `/healthz`
//! is read every 100 ms. Most offers may be refused (the party is full); each must be answered,
//! `/healthz` must keep answering in under 100 ms, and the watching viewers lose nothing.
//!
//! The party runs in a network namespace at 198.18.0.1 (`tools::netns`); the steady viewers,
//! the flood and the `/healthz` reader are one `cowatch receivers` process in the other, so the
//! receivers' kernel drops are theirs and counted apart (`/proc/net/snmp` there). Needs root,
//! iproute2 and iptables: without root it says so and passes (CI runs as root).

mod common;

use std::time::Duration;

use common::netns_party::NsParty;
use common::receivers::{Receivers, is_root};

const STEADY: usize = 20;
const POSTS: usize = 1000;
const FLOOD_SECONDS: u64 = 10;
/// Every `/healthz` reading must come back faster than this.
const MAX_HEALTH_MS: f64 = 100.0;

#[test]
fn an_offer_flood_is_answered_and_harms_no_viewer() {
    if !is_root() {
        eprintln!(
            "SKIPPED flood: needs root to build network namespaces (ip netns); CI runs as root"
        );
        return;
    }
    // The flood comes from the viewers' one address: this test is about the server's capacity
    // under offers, not the per-address rate limit (tests/hostile_sockets.rs has that).
    let party = NsParty::start(&["--max-viewers", "100", "--whep-per-minute", "0"]);
    // The flood, then as long again for the answers and for the steady viewers to show harm.
    let watch = 2 * FLOOD_SECONDS + 5;
    let receivers = Receivers::start(
        &party,
        &[
            "--viewers",
            &STEADY.to_string(),
            "--seconds",
            &watch.to_string(),
            "--flood-posts",
            &POSTS.to_string(),
            "--flood-seconds",
            &FLOOD_SECONDS.to_string(),
            "--health-every-ms",
            "100",
        ],
    );
    println!("{}", receivers.wait_ready(Duration::from_secs(60)));
    let report = receivers.finish();
    let flood = report.flood.as_ref().expect("the report has the flood");
    let health = report
        .health
        .as_ref()
        .expect("the report has /healthz readings");
    println!(
        "flood: {} POSTs in {:.1} s answered {:?}, slowest {:.0} ms; /healthz {} readings, p50 \
         {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} failed; steady: {} connected, {} packets, {} \
         lost; receivers' kernel drops {:?}",
        flood.posts,
        flood.seconds,
        flood.statuses,
        flood.slowest_answer_ms,
        health.readings,
        health.p50_ms,
        health.p99_ms,
        health.max_ms,
        health.failed,
        report.steady.connected,
        report.steady.packets,
        report.steady.lost,
        report.kernel,
    );
    assert_eq!(flood.posts, POSTS);
    assert_eq!(
        flood.statuses.get("none"),
        None,
        "POSTs without an answer within 10 s: {:?}",
        flood.statuses
    );
    assert!(
        health.readings as f64 >= (watch * 10) as f64 * 0.8,
        "only {} /healthz readings in {watch} s",
        health.readings
    );
    assert!(
        health.max_ms < MAX_HEALTH_MS,
        "/healthz took up to {:.0} ms during the flood (p99 {:.0} ms, {} failed); limit \
         {MAX_HEALTH_MS} ms",
        health.max_ms,
        health.p99_ms,
        health.failed
    );
    assert_eq!(
        report.steady.connected, STEADY,
        "{:?}",
        report.steady.failures
    );
    assert!(
        report.steady.lost <= report.kernel.in_errors,
        "the steady viewers lost {} packets; their kernel dropped only {}: the server lost the rest",
        report.steady.lost,
        report.kernel.in_errors
    );
}
