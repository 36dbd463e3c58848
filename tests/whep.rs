//! WHEP signalling as players and browsers meet it: real browser offers, garbage, the cap.

mod common;

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cowatch::broadcast::Broadcaster;
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A demo party (generated movie, no webcam) with the fan-out on a free loopback port.
async fn party(max_viewers: usize) -> (Router, Pipeline, Broadcaster) {
    let pipeline =
        Pipeline::start(common::demo_settings(WebcamSource::None, "inset", 1000)).unwrap();
    let broadcaster = common::broadcaster(&pipeline, max_viewers).await;
    let app = common::app(&pipeline, &broadcaster);
    (app, pipeline, broadcaster)
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

async fn post(app: &Router, content_type: &str, body: impl Into<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(
            Request::post("/whep")
                .header(header::CONTENT_TYPE, content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get_json(app: &Router, path: &str) -> serde_json::Value {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn sdp(name: &str) -> String {
    let path = Path::new("../shared/data/sdp").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared/ must sit beside the checkout)",
            path.display()
        )
    })
}

/// A refusal is a 4xx with exactly one line of reason.
fn assert_refused(reply: &Reply, status: StatusCode, reason: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    assert!(
        reply.body.contains(reason),
        "{what}: reason was {:?}",
        reply.body
    );
    assert_eq!(
        reply.body.trim_end().lines().count(),
        1,
        "{what}: {:?}",
        reply.body
    );
    assert!(
        reply.location.is_none(),
        "{what}: a refusal creates no resource"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_real_browser_offer_gets_an_answer_or_a_reason() {
    let (app, pipeline, broadcaster) = party(100).await;
    let accepted = [
        "android_chrome63_offer_recvonly_audio_video.sdp",
        "chrome120_offer_sendrecv_audio_video.sdp",
        "chromium_offer_recvonly_video_audio_video_candidates_millicast.sdp",
        "firefox121_offer_sendrecv_audio_video.sdp",
        "firefox60_offer_recvonly_video_audio.sdp",
        "opera52_offer_recvonly_audio_video.sdp",
        "safari_offer_sendrecv_audio_video_data_candidates.sdp",
    ];
    // VP8/VP9 only (a Firefox without OpenH264): gets the on-demand VP8 rendition.
    let vp8_only = "firefox61_offer_sendrecv_video_candidates.sdp";
    let refused = [
        // The browser only sends: it would never see the movie.
        (
            "chrome_2022-08_offer_sendonly_data_audio_video_candidates.sdp",
            "does not receive video",
        ),
        // An SBC's audio-only offer.
        ("icelite_server_audio_sendrecv.sdp", "no video m-line"),
    ];
    let mut listed: Vec<String> = std::fs::read_dir("../shared/data/sdp")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sdp"))
        .collect();
    listed.sort();
    let mut expected: Vec<String> = accepted
        .iter()
        .chain([&vp8_only])
        .map(|s| s.to_string())
        .chain(refused.iter().map(|(s, _)| s.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "every SDP in shared/data/sdp has an expectation here"
    );

    for name in accepted {
        let reply = post(&app, "application/sdp", sdp(name)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {}", reply.body);
        let location = reply.location.unwrap_or_default();
        assert!(
            location.starts_with("/whep/"),
            "{name}: Location {location:?}"
        );
        let answer = &reply.body;
        assert!(answer.starts_with("v=0"), "{name}: {answer}");
        assert!(answer.contains("m=video"), "{name}");
        assert!(
            answer.contains("127.0.0.1"),
            "{name}: our loopback candidate is in the answer"
        );
        assert!(answer.contains("a=ice-lite"), "{name}");
        assert!(answer.contains("H264/90000"), "{name}");
        assert!(answer.contains("a=fingerprint:sha-256"), "{name}");
    }
    let reply = post(&app, "application/sdp", sdp(vp8_only)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert!(reply.body.contains("VP8/90000"), "{}", reply.body);
    assert!(!reply.body.contains("H264"), "{}", reply.body);
    let health: serde_json::Value = get_json(&app, "/healthz").await;
    // Ids follow the ladder (720p and 360p H.264 come first): find the VP8 720p one.
    let vp8 = health["sessions"]["renditions"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["codec"] == "VP8"))
        .expect("a VP8 rendition in /healthz");
    assert_eq!(
        (
            vp8["codec"].as_str(),
            vp8["active"].as_bool(),
            vp8["viewers"].as_u64()
        ),
        (Some("VP8"), Some(true), Some(1)),
        "the VP8 rendition runs for its viewer: {health}"
    );
    let accepted_count = accepted.len() + 1;
    assert_eq!(broadcaster.stats().viewers, accepted_count);
    for (name, reason) in refused {
        let reply = post(&app, "application/sdp", sdp(name)).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, reason, name);
    }
    assert_eq!(
        broadcaster.stats().viewers,
        accepted_count,
        "refused offers leave nothing behind"
    );
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_refused_with_a_reason_and_changes_nothing() {
    let (app, pipeline, broadcaster) = party(100).await;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "empty",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "malformed SDP",
        ),
        (
            "prose",
            b"hello, may I watch?".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed SDP",
        ),
        (
            "binary",
            vec![0xff, 0xfe, 0x00, 0x80, 0x81],
            StatusCode::BAD_REQUEST,
            "malformed SDP",
        ),
        (
            "header only",
            b"v=0\r\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "truncated offer",
            sdp("chrome120_offer_sendrecv_audio_video.sdp").as_bytes()[..400].to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (what, body, status, reason) in cases {
        let reply = post(&app, "application/sdp", body).await;
        assert_refused(&reply, status, reason, what);
    }
    let reply = post(
        &app,
        "text/plain",
        sdp("chrome120_offer_sendrecv_audio_video.sdp"),
    )
    .await;
    assert_refused(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/sdp",
        "wrong type",
    );

    let huge = vec![b'a'; 1024 * 1024];
    let reply = post(&app, "application/sdp", huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "1 MB body");

    assert_eq!(broadcaster.stats().viewers, 0);
    assert_eq!(broadcaster.stats().joins, 0);
    pipeline.shutdown().await;
}

/// The text of `/metrics`.
async fn metrics(app: &Router) -> String {
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn offers_that_never_connect_take_no_seat_and_leave_on_delete() {
    // Two seats; these offers' ICE never completes (nothing answers on their side). The
    // party with real viewers that fill it is in `squat.rs`.
    let (app, pipeline, broadcaster) = party(2).await;
    let offer = sdp("firefox121_offer_sendrecv_audio_video.sdp");
    let mut locations = Vec::new();
    for i in 0..2 {
        let reply = post(&app, "application/sdp", offer.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "offer {}: {}",
            i + 1,
            reply.body
        );
        locations.push(reply.location.unwrap());
    }
    let stats = broadcaster.stats();
    assert_eq!(
        (stats.viewers, stats.pending, stats.connected),
        (2, 2, 0),
        "answered, pending, not seated"
    );
    let text = metrics(&app).await;
    assert!(text.contains("\ncowatch_viewers_pending 2\n"), "{text}");
    assert!(text.contains("\ncowatch_viewers_connected 0\n"), "{text}");
    let health = get_json(&app, "/healthz").await;
    assert_eq!(health["viewers"]["pending"], 2, "{health}");
    assert_eq!(health["viewers"]["connected"], 0, "{health}");

    // Leaving frees the pending place.
    let response = app
        .clone()
        .oneshot(Request::delete(&locations[0]).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let again = app
        .clone()
        .oneshot(Request::delete(&locations[0]).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "a session ends once");
    assert_eq!(broadcaster.stats().pending, 1);
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_refusal_of_a_malformed_offer_shows_an_address_or_a_dump() {
    let (app, pipeline, broadcaster) = party(10).await;
    let good = sdp("chrome120_offer_sendrecv_audio_video.sdp");
    let lines: Vec<&str> = good.lines().collect();
    let with_line = |at: usize, line: &str| {
        let mut all = lines.clone();
        all.insert(at, line);
        all.join("\r\n") + "\r\n"
    };
    let cases = [
        "v=0\r\nthis is not SDP\r\n".to_owned(),
        "v=0\r\no=- {0x7fca} 2 IN IP4 127.0.0.1\r\n".to_owned(),
        with_line(3, "garbage line"),
        with_line(9, "a"),
        with_line(9, "m=video"),
        good.replace("a=rtpmap:96", "a=rtpmap:{96}"),
        good.replace("m=audio 9 UDP/TLS/RTP/SAVPF", "m=audio 9"),
        good[..good.len() / 2].to_owned(),
        good.replace("\r\n", "\r\n\u{0}"),
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let reply = post(&app, "application/sdp", body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "case {i}: {}",
            reply.body
        );
        for leak in ["0x", "PointerOffset", "{", "}"] {
            assert!(
                !reply.body.contains(leak),
                "case {i}: {leak:?} in the refusal {:?}",
                reply.body
            );
        }
        assert_eq!(reply.body.trim_end().lines().count(), 1, "case {i}");
    }
    assert_eq!(
        broadcaster.stats().viewers,
        0,
        "refusals leave nothing behind"
    );
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn players_on_other_origins_may_use_whep() {
    let (app, pipeline, _broadcaster) = party(10).await;
    let preflight = app
        .clone()
        .oneshot(
            Request::options("/whep")
                .header(header::ORIGIN, "https://player.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allow = preflight
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .unwrap();
    assert_eq!(allow, "*");
    let plain = app
        .clone()
        .oneshot(Request::options("/whep").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        plain.headers().get("accept-post").unwrap(),
        "application/sdp"
    );

    let reply = app
        .clone()
        .oneshot(
            Request::post("/whep")
                .header(header::ORIGIN, "https://player.example")
                .header(header::CONTENT_TYPE, "application/sdp")
                .body(Body::from(sdp("firefox60_offer_recvonly_video_audio.sdp")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let exposed = reply
        .headers()
        .get(header::ACCESS_CONTROL_EXPOSE_HEADERS)
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("location"), "{exposed}");
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_that_never_connects_is_reaped_after_the_connect_timeout() {
    let (app, pipeline, broadcaster) = party(1).await;
    let offer = sdp("firefox121_offer_sendrecv_audio_video.sdp");
    // This viewer never connects (nothing answers on its side) and never says goodbye.
    let posted = std::time::Instant::now();
    let reply = post(&app, "application/sdp", offer.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    // It holds no seat: the next offer is answered, not told the party is full.
    let reply = post(&app, "application/sdp", offer.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(broadcaster.stats().pending, 2);
    let deadline = posted + cowatch::broadcast::CONNECT_TIMEOUT + std::time::Duration::from_secs(2);
    while broadcaster.stats().viewers > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the never-connected viewers were not reaped within the connect timeout: {:?}",
            broadcaster.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        posted.elapsed() >= cowatch::broadcast::CONNECT_TIMEOUT,
        "not before the timeout"
    );
    assert_eq!(broadcaster.stats().pending, 0);
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_page_asks_its_session_for_a_keyframe_and_an_unknown_one_is_not_found() {
    let (app, pipeline, broadcaster) = party(10).await;
    let reply = post(
        &app,
        "application/sdp",
        sdp("chrome120_offer_sendrecv_audio_video.sdp"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let resource = reply.location.unwrap();
    let ask = |path: String| {
        let app = app.clone();
        async move {
            app.oneshot(Request::post(path).body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        ask(format!("{resource}/keyframe")).await,
        StatusCode::NO_CONTENT
    );
    // The fan-out handled the join and then the request, in order, before answering.
    let sessions = broadcaster.sessions().await.unwrap();
    assert_eq!(sessions.viewers.len(), 1);
    assert_eq!(
        sessions.viewers[0].keyframe_requests, 1,
        "the request reached the viewer's session: {sessions:?}"
    );
    assert_eq!(
        ask("/whep/00000000000000ff/keyframe".into()).await,
        StatusCode::NOT_FOUND,
        "another session's id"
    );
    assert_eq!(
        ask("/whep/nonsense/keyframe".into()).await,
        StatusCode::NOT_FOUND
    );
    pipeline.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quality_menu_caps_a_session_and_a_wrong_choice_gets_a_reason() {
    let (app, pipeline, broadcaster) = party(10).await;
    let reply = post(
        &app,
        "application/sdp",
        sdp("chrome120_offer_sendrecv_audio_video.sdp"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let resource = reply.location.unwrap();
    let choose = |path: String, body: &'static str| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(
                    Request::post(path)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let quality_of_session = || async {
        let sessions = broadcaster.sessions().await.unwrap();
        assert_eq!(sessions.viewers.len(), 1, "{sessions:?}");
        sessions.viewers[0].quality.clone()
    };

    // What the page offers is what the party has: the ladder, highest first.
    let party = get_json(&app, "/api/party").await;
    assert_eq!(
        party["qualities"],
        serde_json::json!(["720p", "360p"]),
        "{party}"
    );
    assert_eq!(
        quality_of_session().await,
        "auto",
        "a new session is on Auto"
    );

    // Each choice is applied to the session before the answer (the fan-out handled it).
    let url = format!("{resource}/quality");
    for (body, expected) in [
        (r#"{"quality":"360p"}"#, "360p"),
        (r#"{"quality":"720p"}"#, "720p"),
        (r#"{"quality":"auto"}"#, "auto"),
        (r#"{"quality":" 360P "}"#, "360p"),
    ] {
        let (status, text) = choose(url.clone(), body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}: {text}");
        assert_eq!(quality_of_session().await, expected, "after {body}");
    }

    // Refusals: one line saying what is wrong, and the session keeps its choice.
    for (body, reason) in [
        (
            r#"{"quality":"1080p"}"#,
            "this party has no 1080p rendition: pick one of auto, 720p, 360p",
        ),
        (r#"{"quality":"hd"}"#, "unknown quality `hd`"),
        (r#"{"quality":""}"#, "unknown quality ``"),
        (r#"{"quality":360}"#, "invalid type: integer `360`"),
        (r#"{"level":"auto"}"#, "unknown field `level`"),
        (r#"{"quality":"auto""#, "EOF while parsing"),
        ("", "EOF while parsing"),
    ] {
        let (status, text) = choose(url.clone(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(reason), "{body}: reason was {text:?}");
        assert_eq!(text.trim_end().lines().count(), 1, "{body}: {text:?}");
        assert_eq!(quality_of_session().await, "360p", "{body} changed it");
    }

    // The host (and moderators) see the choice beside what the session receives: this
    // offer's peer never connects, so nothing was sent yet and it is on 360p at once.
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/viewers")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", common::HOST_KEY),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let viewers: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let streams = viewers["streams"].as_array().expect("streams listed");
    assert_eq!(streams.len(), 1, "{viewers}");
    let stream = &streams[0];
    assert_eq!(
        format!("/whep/{}", stream["id"].as_str().unwrap_or("")),
        resource,
        "{viewers}"
    );
    assert_eq!(
        (
            stream["codec"].as_str(),
            stream["rendition"].as_str(),
            stream["quality"].as_str(),
            stream["switches"].as_u64(),
            stream["connected"].as_bool(),
        ),
        (
            Some("H264"),
            Some("360p"),
            Some("360p"),
            Some(0),
            Some(false)
        ),
        "{viewers}"
    );
    for field in ["estimate_kbps", "loss", "rtt_ms"] {
        assert!(
            stream[field].is_null(),
            "{field}: no figure before any feedback: {viewers}"
        );
    }

    // Another session's id, or none at all, is no session.
    for path in ["/whep/00000000000000ff/quality", "/whep/nonsense/quality"] {
        let (status, text) = choose(path.into(), r#"{"quality":"360p"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {text}");
        assert!(text.contains("no such viewer session"), "{path}: {text}");
    }
    // A session that left is gone too.
    let left = app
        .clone()
        .oneshot(Request::delete(&resource).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(left.status(), StatusCode::OK);
    let (status, _) = choose(url, r#"{"quality":"auto"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a session that left");
    pipeline.shutdown().await;
}
