//! Seats that cannot be squatted (issue 13): offers whose ICE never completes, in a flood from
//! one address or re-sent in a loop from several, never keep a real viewer out and never make
//! the party say it is full; a party whose seats are all taken by connected viewers says so.
//!
//! The server is served with connect info, as `main` serves it, so each loopback address
//! 127.0.0.x is a client of its own: the squatters bind their HTTP sockets there. Their offers
//! are real browser offers whose candidates nobody answers. The real viewers are the probe
//! (webrtc-rs, an independent stack, from 127.0.0.1), which must receive the party's video.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use cowatch::broadcast::{
    Broadcaster, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_ADDRESS, SeatLimits,
};
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;
use cowatch::tools::probe::{ProbeOptions, ProbeReport, probe};

/// A demo party with `max_viewers` seats and the default caps on pending offers, served with
/// connect info on a free loopback port; with its WHEP URL.
async fn party(max_viewers: usize) -> (Pipeline, Broadcaster, String) {
    let pipeline =
        Pipeline::start(common::demo_settings(WebcamSource::None, "inset", 1000)).unwrap();
    let broadcaster = common::broadcaster_with(
        &pipeline,
        SeatLimits {
            max_viewers,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_per_address: DEFAULT_MAX_PENDING_PER_ADDRESS,
        },
    )
    .await;
    let app = common::app(&pipeline, &broadcaster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    (pipeline, broadcaster, format!("http://{addr}/whep"))
}

fn offer() -> String {
    let path = Path::new("../shared/data/sdp").join("firefox121_offer_sendrecv_audio_video.sdp");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared/ must sit beside the checkout)",
            path.display()
        )
    })
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// What a squatter's POST got back.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// `n` POSTs of `sdp` at once from `from`, none of which will ever connect.
async fn squat(url: &str, from: IpAddr, sdp: &str, n: usize) -> Vec<Reply> {
    let client = reqwest::Client::builder()
        .local_address(from)
        .no_proxy()
        .build()
        .unwrap();
    let posts = (0..n).map(|_| {
        let client = client.clone();
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/sdp")
                .body(sdp.to_owned())
                .send()
                .await
                .expect("the server answers every POST");
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            Reply {
                status,
                retry_after,
                body,
            }
        }
    });
    futures_util::future::join_all(posts).await
}

/// A real viewer from 127.0.0.1 watching for `seconds`.
async fn watch(url: &str, seconds: u64) -> ProbeReport {
    probe(&ProbeOptions {
        url: url.to_owned(),
        duration: Duration::from_secs(seconds),
        codec: None,
    })
    .await
    .expect("the probe reaches the party")
}

/// The viewer got in and saw the movie.
fn assert_watched(report: &ProbeReport, what: &str) {
    assert_eq!(report.status, 201, "{what}: refused: {:?}", report.reason);
    assert!(report.connected, "{what}: never connected: {report:?}");
    assert!(
        report.time_to_first_keyframe_ms.is_some() && report.video_packets > 30,
        "{what}: too little video: {report:?}"
    );
}

/// Every squatter's reply is an answer or a "not now" with Retry-After: never "full".
fn assert_never_full(replies: &[Reply]) {
    for reply in replies {
        assert!(
            !reply.body.contains("full"),
            "a squatter made the party say it is full: {reply:?}"
        );
        match reply.status {
            201 => {}
            429 | 503 => assert!(reply.retry_after.is_some(), "{reply:?}"),
            other => panic!("unexpected status {other}: {reply:?}"),
        }
    }
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_viewer_gets_a_seat_and_video_during_an_offer_flood_from_one_address() {
    let (pipeline, broadcaster, url) = party(2).await;
    let sdp = offer();
    let flood = squat(&url, loopback(2), &sdp, 300).await;
    println!(
        "flood of 300 from 127.0.0.2: {} answered, {} 429, {} 503; {:?}",
        count(&flood, 201),
        count(&flood, 429),
        count(&flood, 503),
        broadcaster.stats()
    );
    assert_never_full(&flood);
    assert_eq!(
        count(&flood, 201),
        DEFAULT_MAX_PENDING_PER_ADDRESS,
        "one address holds its cap of pending offers"
    );
    assert_eq!(count(&flood, 429), 300 - DEFAULT_MAX_PENDING_PER_ADDRESS);
    assert!(
        flood
            .iter()
            .find(|r| r.status == 429)
            .is_some_and(|r| r.body.contains("from your address")),
        "429 says why"
    );

    // The viewer joins while the flood's offers are pending, and the flood goes on.
    let viewer = tokio::spawn({
        let url = url.clone();
        async move { watch(&url, 4).await }
    });
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.extend(squat(&url, loopback(2), &sdp, 100).await);
        let stats = broadcaster.stats();
        assert!(
            stats.pending <= DEFAULT_MAX_PENDING_PER_ADDRESS + 1,
            "the flood holds only its address's cap: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let report = viewer.await.unwrap();
    println!(
        "viewer: {} video packets, first keyframe after {:?} ms; the flood meanwhile: {} \
         answered, {} 429",
        report.video_packets,
        report.time_to_first_keyframe_ms,
        count(&replies, 201),
        count(&replies, 429)
    );
    assert_watched(&report, "viewer during the flood");
    assert_never_full(&replies);
    assert_eq!(
        broadcaster.stats().refused_at_connect,
        0,
        "nobody was turned away"
    );
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatting_from_several_addresses_never_keeps_a_real_viewer_out() {
    // Two seats and four squatting addresses: 16 pending offers at a time, each re-sent every
    // 2 s. Before issue 13 each offer held a seat for 15 s, and the party was "full".
    let (pipeline, broadcaster, url) = party(2).await;
    let sdp = offer();
    let stop = tokio_util::sync::CancellationToken::new();
    let squatters = tokio::spawn({
        let (url, sdp, stop) = (url.clone(), sdp.clone(), stop.clone());
        async move {
            let mut replies = Vec::new();
            while !stop.is_cancelled() {
                for last in 2..=5 {
                    replies.extend(squat(&url, loopback(last), &sdp, 10).await);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            replies
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut most_pending = 0;
    for n in 0..3 {
        let report = watch(&url, 2).await;
        most_pending = most_pending.max(broadcaster.stats().pending);
        assert_watched(&report, &format!("viewer {n} during the squat"));
    }
    stop.cancel();
    let replies = squatters.await.unwrap();
    println!(
        "squat from 4 addresses: {} POSTs, {} answered, {} 429, {} 503; most pending seen {}",
        replies.len(),
        count(&replies, 201),
        count(&replies, 429),
        count(&replies, 503),
        most_pending
    );
    assert_never_full(&replies);
    assert!(
        count(&replies, 429) > 0,
        "the squatters hit their addresses' caps"
    );
    assert!(
        most_pending <= 4 * DEFAULT_MAX_PENDING_PER_ADDRESS + 1,
        "{most_pending}"
    );
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_whose_seats_are_all_taken_says_it_is_full() {
    let (pipeline, broadcaster, url) = party(2).await;
    let viewers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { watch(&url, 4).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while broadcaster.stats().connected < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two viewers never connected: {:?}",
            broadcaster.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = squat(&url, loopback(3), &offer(), 1).await;
    assert_eq!(third[0].status, 503, "{:?}", third[0]);
    assert_eq!(third[0].body.trim_end(), "the party is full (2 viewers)");
    for viewer in viewers {
        assert_watched(&viewer.await.unwrap(), "seated viewer");
    }
    // They left (DELETE): the seats are free again.
    let again = squat(&url, loopback(3), &offer(), 1).await;
    assert_eq!(again[0].status, 201, "{:?}", again[0]);
    pipeline.shutdown().await;
}
