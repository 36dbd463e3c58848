//! An invite-only party: the viewer page, WHEP, the chat socket and sessions refuse a viewer
//! without the invite code, and take one with it (or with a host or moderator key).

mod common;

use std::time::Duration;

use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;

const INVITE: &str = "invite-code-42";

fn offer() -> String {
    std::fs::read_to_string("../shared/data/sdp/chrome120_offer_sendrecv_audio_video.sdp")
        .expect("../shared/data/sdp beside the checkout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_only_party_lets_in_only_the_invited() {
    let pipeline =
        Pipeline::start(common::demo_settings(WebcamSource::None, "inset", 800)).unwrap();
    let broadcaster = common::broadcaster(&pipeline, 10).await;
    let mut state = common::state(&pipeline, &broadcaster, &common::scratch_data(), None);
    let store = cowatch::store::Store::open(&common::scratch_data()).unwrap();
    state.party = cowatch::party::Party::new(
        cowatch::party::PartyConfig {
            host_key: cowatch::party::Key::new(common::HOST_KEY),
            invite: Some(cowatch::party::Key::new(INVITE)),
        },
        store,
    );
    let addr = common::serve_app(cowatch::web::app(state)).await;
    let http = reqwest::Client::new();
    let whep = |query: &'static str| {
        http.post(format!("http://{addr}/whep{query}"))
            .header("Content-Type", "application/sdp")
            .body(offer())
            .send()
    };

    let refused = whep("").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("invite"));
    let wrong = whep("?invite=invite-code-43").await.unwrap();
    assert_eq!(wrong.status(), 403);
    let admitted = whep("?invite=invite-code-42").await.unwrap();
    assert_eq!(admitted.status(), 201, "{:?}", admitted.text().await);
    let host = http
        .post(format!("http://{addr}/whep"))
        .header("Content-Type", "application/sdp")
        .bearer_auth(common::HOST_KEY)
        .body(offer())
        .send()
        .await
        .unwrap();
    assert_eq!(host.status(), 201, "the host needs no invite");

    // The chat socket.
    let no = tokio_tungstenite::connect_async(format!("ws://{addr}/chat")).await;
    assert!(
        no.is_err(),
        "a chat socket without the invite must be refused"
    );
    let (_ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/chat?invite={INVITE}"))
            .await
            .expect("the invited get the chat");
    assert_eq!(response.status(), 101);

    // Sessions (party chat needs one).
    let session = |body: serde_json::Value| {
        http.post(format!("http://{addr}/api/session"))
            .json(&body)
            .send()
    };
    assert_eq!(session(serde_json::json!({})).await.unwrap().status(), 403);
    let ok = session(serde_json::json!({ "invite": INVITE }))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Nothing about the code leaks to the public state.
    let party = http
        .get(format!("http://{addr}/api/party"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(party.contains("\"invite_only\":true"));
    assert!(!party.contains(INVITE));
    tokio::time::timeout(Duration::from_secs(10), pipeline.shutdown())
        .await
        .unwrap();
}
