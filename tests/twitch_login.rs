//! Signing in to Twitch, end to end: the real `cowatch` binary against the id.twitch.tv
//! stand-in (tests/common/twitch_id.rs), the Twitch chat stand-in and the Helix stand-in.
//!
//! - `cowatch twitch login` shows the code, waits for its approval, and keeps the sign-in
//!   in a 0600 file; no token ever reaches its output; `logout` revokes and forgets it.
//! - A party refreshes the token while it runs: the rotated refresh token reaches the file,
//!   the IRC connection stays the one it was, chat still arrives, and Helix gets the new token.
//! - A refresh token Twitch refuses: the party says so and goes on.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::helix::{TestHelix, TestHelixConfig};
use common::twitch::TestServer;
use common::twitch_id::{TestIdConfig, TestTwitchId};
use cowatch::chat::bridge::Secret;
use cowatch::twitch::{AuthClient, AuthError};
use futures_util::StreamExt;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cowatch");
const HOST_KEY: &str = "twitch-login-test-host-key";
const LOGIN: &str = "party_mod";

/// A scratch data directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "cowatch-twitch-login-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("twitch-sign-in.json")
    }

    fn stored(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.file()).unwrap()).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose stdout and stderr are collected as they come.
struct Running {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(command: &mut Command) -> Running {
        let mut child = command
            // Nothing of the developer's own Twitch set-up may leak into the test.
            .env_remove("TWITCH_OAUTH_TOKEN")
            .env_remove("TWITCH_CLIENT_ID")
            .env("RUST_LOG", "cowatch=info,warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let readers: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut reader in readers {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Running { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the output holds `text`; false after `timeout`.
    async fn wait_output(&self, text: &str, timeout: Duration) -> bool {
        wait(timeout, || self.output().contains(text)).await
    }

    /// Waits for the process to exit; its success.
    async fn exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers take the last bytes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// `cowatch twitch login` with the stand-in; the code is approved once it has been polled
/// (answered `authorization_pending`) at least once. Returns the process's output.
async fn login(dir: &Scratch, id: &TestTwitchId) -> String {
    let mut run = Running::spawn(Command::new(BIN).args([
        "twitch",
        "login",
        "--data-dir",
        dir.0.to_str().unwrap(),
        "--twitch-auth-base",
        &id.base(),
        "--client-id",
        &id.config().client_id,
    ]));
    let mut code = None;
    assert!(
        wait(Duration::from_secs(20), || {
            code = id
                .waiting_codes()
                .into_iter()
                .find(|(_, polls)| *polls >= 1);
            code.is_some()
        })
        .await,
        "the code is never polled:\n{}",
        run.output()
    );
    let (code, _) = code.unwrap();
    let output = run.output();
    assert!(output.contains(&code), "the user code is shown:\n{output}");
    assert!(
        output.contains(&format!(
            "https://www.twitch.tv/activate?public=true&device-code={code}"
        )),
        "the verification URI is shown:\n{output}"
    );
    assert!(id.approve(&code));
    assert!(run.exit(Duration::from_secs(20)).await, "{}", run.output());
    run.output()
}

/// No issued token in `text`.
fn assert_no_token(id: &TestTwitchId, text: &str) {
    for token in id.issued().iter().chain(id.issued_refresh().iter()) {
        assert!(!text.contains(token.as_str()), "a token is shown:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_shows_the_code_keeps_the_token_in_a_0600_file_and_logout_revokes_it() {
    let id = TestTwitchId::start(TestIdConfig::default()).await.unwrap();
    let dir = Scratch::new("login");
    let output = login(&dir, &id).await;
    assert!(
        output.contains(&format!("Signed in to Twitch as {LOGIN}")),
        "{output}"
    );
    // A QR code for the phone: rows of block characters.
    assert!(
        output.lines().filter(|l| l.contains('█')).count() > 10,
        "{output}"
    );
    let mode = std::fs::metadata(dir.file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the sign-in file is the owner's only");
    let stored = dir.stored();
    let access = id.issued()[0].clone();
    assert_eq!(stored["access_token"], access.as_str());
    assert_eq!(stored["refresh_token"], id.issued_refresh()[0].as_str());
    assert_eq!(stored["login"], LOGIN);
    assert_no_token(&id, &output);
    // Every token travelled in a form body or a header, never in a URL.
    for r in id.requests() {
        assert_eq!(r.query, None, "{r:?}");
    }
    let grants: Vec<String> = id
        .requests()
        .iter()
        .filter_map(|r| r.form.get("grant_type").cloned())
        .collect();
    assert!(
        grants.len() >= 2,
        "polled while pending, then once approved: {grants:?}"
    );
    assert!(
        grants
            .iter()
            .all(|g| g == "urn:ietf:params:oauth:grant-type:device_code")
    );

    let mut out = Running::spawn(Command::new(BIN).args([
        "twitch",
        "logout",
        "--data-dir",
        dir.0.to_str().unwrap(),
        "--twitch-auth-base",
        &id.base(),
    ]));
    assert!(out.exit(Duration::from_secs(20)).await, "{}", out.output());
    assert!(
        out.output().contains("Signed out party_mod"),
        "{}",
        out.output()
    );
    assert!(id.revoked(&access), "logout revokes the token on Twitch");
    assert!(!dir.file().exists());
    assert_no_token(&id, &out.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_a_client_id_says_what_is_missing() {
    let dir = Scratch::new("no-client");
    let mut run = Running::spawn(Command::new(BIN).args([
        "twitch",
        "login",
        "--data-dir",
        dir.0.to_str().unwrap(),
        "--twitch-auth-base",
        "http://127.0.0.1:9/oauth2",
    ]));
    assert!(!run.exit(Duration::from_secs(20)).await);
    assert!(
        run.output().contains("TWITCH_CLIENT_ID"),
        "{}",
        run.output()
    );
    assert!(!dir.file().exists());
}

/// The client against the stand-in: rotation spends the old refresh token, and a spent or
/// revoked one is the clear "run `cowatch twitch login` again".
#[tokio::test]
async fn refresh_tokens_rotate_and_a_spent_one_is_refused_clearly() {
    let id = TestTwitchId::start(TestIdConfig::default()).await.unwrap();
    let client = AuthClient::new(&id.base(), &id.config().client_id).unwrap();
    let device = client.device("chat:read").await.unwrap();
    assert_eq!(
        client.poll(&device.device_code, "chat:read").await.err(),
        Some(AuthError::Pending)
    );
    id.approve(&device.user_code);
    let first = client.poll(&device.device_code, "chat:read").await.unwrap();
    assert_eq!(
        client.poll(&device.device_code, "chat:read").await.err(),
        Some(AuthError::DeviceExpired),
        "a device code gives its tokens once"
    );
    let who = client
        .validate(&Secret::new(first.access_token.clone()))
        .await
        .unwrap();
    assert_eq!(
        (who.login.as_str(), who.scopes.as_slice()),
        (LOGIN, &["chat:read".to_owned()][..])
    );
    let second = client
        .refresh(&Secret::new(first.refresh_token.clone()))
        .await
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    let err = client
        .refresh(&Secret::new(first.refresh_token.clone()))
        .await
        .err()
        .unwrap();
    assert_eq!(err, AuthError::SignInLost);
    assert!(
        err.to_string().contains("run `cowatch twitch login` again"),
        "{err}"
    );
    client
        .revoke(&Secret::new(second.access_token.clone()))
        .await
        .unwrap();
    assert_eq!(
        client
            .validate(&Secret::new(second.access_token))
            .await
            .err(),
        Some(AuthError::SignInLost)
    );
}

/// The party's address, from the health line it prints.
async fn party_addr(party: &Running) -> String {
    assert!(
        party.wait_output("health:", Duration::from_secs(60)).await,
        "the party does not start:\n{}",
        party.output()
    );
    let output = party.output();
    let line = output.lines().find(|l| l.contains("health:")).unwrap();
    line.split("http://")
        .nth(1)
        .and_then(|u| u.strip_suffix("/healthz"))
        .unwrap()
        .trim()
        .to_owned()
}

fn party(
    dir: &Scratch,
    id: &TestTwitchId,
    helix: &TestHelix,
    irc: &TestServer,
    channel: &str,
) -> Running {
    Running::spawn(
        Command::new(BIN)
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--webrtc-port",
                "0",
                "--data-dir",
                dir.0.to_str().unwrap(),
                "--twitch-channel",
                channel,
                "--twitch-irc-addr",
                &irc.addr().to_string(),
                "--twitch-api-base",
                &helix.base(),
                "--twitch-auth-base",
                &id.base(),
            ])
            .env("COWATCH_HOST_KEY", HOST_KEY),
    )
}

fn helix_config(channel: &str) -> TestHelixConfig {
    TestHelixConfig {
        broadcaster: (channel.into(), "1001".into()),
        moderator: (LOGIN.into(), "2002".into()),
        ..TestHelixConfig::default()
    }
}

async fn host_get(addr: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(HOST_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// id.twitch.tv, whose first tokens live `expires_in` seconds, and Helix for `channel`,
/// accepting exactly the tokens id.twitch.tv would validate now.
async fn stand_ins(channel: &str, expires_in: u64) -> (TestTwitchId, TestHelix) {
    let id = TestTwitchId::start(TestIdConfig {
        expires_in,
        ..TestIdConfig::default()
    })
    .await
    .unwrap();
    let helix = TestHelix::start(helix_config(channel)).await.unwrap();
    let check = id.clone();
    helix.set_token_check(Arc::new(move |token| check.access_valid(token)));
    (id, helix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_refreshes_the_token_without_dropping_the_chat() {
    let channel = "signin_refresh";
    // The first token lives 30 s, so the party (started within a few seconds) refreshes it
    // at half-life while running; the refreshed ones live long, so the file settles.
    let (id, helix) = stand_ins(channel, 30).await;
    let irc = TestServer::shared();
    let dir = Scratch::new("refresh");
    login(&dir, &id).await;
    let first_access = id.issued()[0].clone();

    let party = party(&dir, &id, &helix, &irc, channel);
    let addr = party_addr(&party).await;
    assert!(
        irc.wait_joined(channel, Duration::from_secs(30)).await,
        "the bridge joins:\n{}",
        party.output()
    );
    assert_eq!(
        id.refresh_grants(),
        0,
        "the party took so long to start that the refresh came before the chat; the \
         test proves nothing like this:\n{}",
        party.output()
    );
    assert!(
        party
            .output()
            .contains(&format!("signed in:   Twitch as {LOGIN}"))
    );
    let joins = irc.joins(channel);
    let viewers = host_get(&addr, "/api/viewers").await;
    assert_eq!(
        viewers["twitch"],
        json!({ "login": LOGIN, "signed_in": true }),
        "{viewers}"
    );

    assert!(
        wait(Duration::from_secs(30), || id.refresh_grants() >= 1).await,
        "no refresh:\n{}",
        party.output()
    );
    let live = id.live_refresh_token().expect("a live refresh token");
    assert!(
        wait(Duration::from_secs(5), || dir.stored()["refresh_token"]
            == live.as_str())
        .await,
        "the file holds the rotated refresh token"
    );
    let new_access = dir.stored()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_access, first_access);
    let mode = std::fs::metadata(dir.file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Chat after the refresh, on the same connection.
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    let line = format!(
        "@badge-info=;badges=;color=#1E90FF;display-name=viewer1;emotes=;first-msg=0;flags=;id=after-refresh-1;mod=0;room-id=1001;subscriber=0;tmi-sent-ts={};turbo=0;user-id=7;user-type= :viewer1!viewer1@viewer1.tmi.twitch.tv PRIVMSG #{channel} :hello after the refresh",
        cowatch::util::clock::unix_ms()
    );
    assert_eq!(
        irc.send(channel, &line).await,
        1,
        "one connection holds the channel"
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = socket.next().await {
            if frame
                .to_text()
                .is_ok_and(|t| t.contains("hello after the refresh"))
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the chat line reaches the party");
    assert_eq!(
        irc.joins(channel),
        joins,
        "the IRC connection was never replaced"
    );
    assert_eq!(irc.join_attempts(channel), joins);

    // A moderator action goes to Helix with the refreshed token.
    let answer: Value = reqwest::Client::new()
        .post(format!("http://{addr}/api/mod"))
        .bearer_auth(HOST_KEY)
        .json(&json!({ "action": "clear_chat" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["applied"], true, "{answer}");
    let sent = helix
        .moderation_requests()
        .into_iter()
        .find(|r| r.path == "/moderation/chat")
        .unwrap_or_else(|| panic!("no Helix call: {answer}\n{}", party.output()));
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {new_access}").as_str())
    );
    assert!(
        !answer.to_string().contains("Invalid OAuth token"),
        "{answer}"
    );
    assert_no_token(&id, &party.output());
    drop(party);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_is_told_and_the_party_goes_on() {
    let channel = "signin_revoked";
    // The token is due for a refresh by the time the party starts; Twitch refuses it.
    let (id, helix) = stand_ins(channel, 2).await;
    let irc = TestServer::shared();
    let dir = Scratch::new("revoked");
    login(&dir, &id).await;
    id.reject_refresh(true);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut party = party(&dir, &id, &helix, &irc, channel);
    let addr = party_addr(&party).await;
    let told = "Twitch sign-in expired or was revoked; run `cowatch twitch login` again";
    assert!(
        party.wait_output(told, Duration::from_secs(10)).await,
        "{}",
        party.output()
    );
    assert!(id.refused_refreshes() >= 1);
    // The chat is still read (anonymously now) and the party still serves.
    assert!(
        irc.wait_joined(channel, Duration::from_secs(30)).await,
        "{}",
        party.output()
    );
    let viewers = host_get(&addr, "/api/viewers").await;
    assert_eq!(viewers["twitch"]["signed_in"], false, "{viewers}");
    assert_eq!(viewers["twitch"]["problem"], told, "{viewers}");
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert_no_token(&id, &party.output());
    party.stop();
}
