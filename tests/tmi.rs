//! The Twitch-protocol (TMI) server the tests use as Twitch, seen from the wire: a bare IRC
//! client checks exactly what it sends, and the real `twitch-irc` client logs in, reads,
//! says something and rejoins after a RECONNECT.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use common::twitch::TestServer;

const STEP: Duration = Duration::from_secs(5);

/// A bare IRC client, to see exactly what the server puts on the wire.
struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawClient {
    async fn connect(server: &TestServer) -> RawClient {
        let stream = TcpStream::connect(server.addr()).await.expect("connect");
        let (read_half, writer) = stream.into_split();
        RawClient {
            reader: BufReader::new(read_half),
            writer,
        }
    }

    async fn send(&mut self, line: &str) {
        let line = format!("{line}\r\n");
        self.writer.write_all(line.as_bytes()).await.expect("write");
    }

    /// The next line without CRLF, or None at EOF.
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(STEP, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for a line")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert!(line.ends_with("\r\n"), "line not CRLF-terminated: {line:?}");
        line.truncate(line.len() - 2);
        Some(line)
    }

    async fn expect(&mut self, want: &str) {
        assert_eq!(self.line().await.as_deref(), Some(want));
    }

    async fn expect_eof(&mut self) {
        assert_eq!(self.line().await, None);
    }

    /// Logs in and skips the welcome.
    async fn login(server: &TestServer, login: &str) -> RawClient {
        let mut client = RawClient::connect(server).await;
        client.send("PASS oauth:secret").await;
        client.send(&format!("NICK {login}")).await;
        for _ in 0..7 {
            client.line().await.expect("welcome line");
        }
        client
    }

    /// Joins and skips the five JOIN replies.
    async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN #{channel}")).await;
        for _ in 0..5 {
            self.line().await.expect("JOIN reply");
        }
    }
}

#[tokio::test]
async fn handshake_replies_in_order() {
    let server = TestServer::start().await.expect("start");
    server.set_bot_badges("hs_b", "moderator/1");
    let mut c = RawClient::connect(&server).await;
    c.send("CAP REQ :twitch.tv/commands twitch.tv/tags").await;
    c.send("PASS oauth:abcdef").await;
    c.send("NICK HsBot").await;
    c.send("JOIN #hs_a,#hs_b").await;
    c.expect(":tmi.twitch.tv CAP * ACK :twitch.tv/commands twitch.tv/tags")
        .await;
    c.expect(":tmi.twitch.tv 001 hsbot :Welcome, GLHF!").await;
    c.expect(":tmi.twitch.tv 002 hsbot :Your host is tmi.twitch.tv")
        .await;
    c.expect(":tmi.twitch.tv 003 hsbot :This server is rather new")
        .await;
    c.expect(":tmi.twitch.tv 004 hsbot :-").await;
    c.expect(":tmi.twitch.tv 375 hsbot :-").await;
    c.expect(":tmi.twitch.tv 372 hsbot :You are in a maze of twisty passages, all alike.")
        .await;
    c.expect(":tmi.twitch.tv 376 hsbot :>").await;
    for (chan, badges, moderator, user_type) in
        [("hs_a", "", 0, ""), ("hs_b", "moderator/1", 1, "mod")]
    {
        c.expect(&format!(":hsbot!hsbot@hsbot.tmi.twitch.tv JOIN #{chan}"))
            .await;
        c.expect(&format!(":hsbot.tmi.twitch.tv 353 hsbot = #{chan} :hsbot"))
            .await;
        c.expect(&format!(
            ":hsbot.tmi.twitch.tv 366 hsbot #{chan} :End of /NAMES list"
        ))
        .await;
        c.expect(&format!(
            "@badge-info=;badges={badges};color=;display-name=hsbot;emote-sets=0;\
             mod={moderator};subscriber=0;user-type={user_type} :tmi.twitch.tv USERSTATE #{chan}"
        ))
        .await;
        c.expect(&format!(
            "@emote-only=0;followers-only=-1;r9k=0;room-id=12345;slow=0;subs-only=0 \
             :tmi.twitch.tv ROOMSTATE #{chan}"
        ))
        .await;
    }
    assert!(server.wait_joined("#hs_a", STEP).await);
    assert_eq!((server.joins("hs_a"), server.joins("HS_B")), (1, 1));

    c.send("PING :hello there").await;
    c.expect(":tmi.twitch.tv PONG tmi.twitch.tv :hello there")
        .await;
    // What twitch-irc itself sends.
    c.send("PING tmi.twitch.tv").await;
    c.expect(":tmi.twitch.tv PONG tmi.twitch.tv :tmi.twitch.tv")
        .await;
    // Unknown commands are ignored; LF alone ends a line too.
    c.writer
        .write_all(b"WHO #hs_a\nPART #hs_a\n")
        .await
        .expect("write");
    c.expect(":hsbot!hsbot@hsbot.tmi.twitch.tv PART #hs_a")
        .await;
    assert!(!server.wait_joined("hs_a", Duration::ZERO).await);
    assert!(server.wait_joined("hs_b", Duration::ZERO).await);
}

#[tokio::test]
async fn anonymous_login_accepted_bad_pass_refused() {
    let server = TestServer::shared();
    let mut anon = RawClient::connect(&server).await;
    anon.send("PASS SCHMOOPIIE").await;
    anon.send("NICK justinfan12345").await;
    anon.expect(":tmi.twitch.tv 001 justinfan12345 :Welcome, GLHF!")
        .await;

    let mut bad = RawClient::connect(&server).await;
    bad.send("PASS SCHMOOPIIE").await;
    bad.send("NICK somebot").await;
    bad.expect(":tmi.twitch.tv NOTICE * :Login authentication failed")
        .await;
    bad.expect_eof().await;
}

#[tokio::test]
async fn routes_by_channel() {
    let server = TestServer::shared();
    let mut a = RawClient::login(&server, "route_bot_a").await;
    let mut b = RawClient::login(&server, "route_bot_b").await;
    a.join("route_a").await;
    b.join("route_b").await;

    // Sent unchanged, whatever channel the line names.
    let line = "@id=1 :someone!someone@someone.tmi.twitch.tv PRIVMSG #elsewhere :hi a";
    assert_eq!(server.send("route_a", line).await, 1);
    assert_eq!(server.send("#route_b", "marker b").await, 1);
    assert_eq!(server.send("route_nobody", "lost").await, 0);
    a.expect(line).await;
    b.expect("marker b").await;

    let batch: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
    assert_eq!(server.send_batch("route_b", &batch).await, 1);
    for want in &batch {
        b.expect(want).await;
    }
    assert_eq!(server.send("route_a", "marker a").await, 1);
    a.expect("marker a").await;
}

#[tokio::test]
async fn reconnect_sends_reconnect_then_eof() {
    let server = TestServer::shared();
    let mut c = RawClient::login(&server, "reconnect_bot").await;
    c.join("reconnect_chan").await;
    server.send("reconnect_chan", "before").await;
    server.reconnect("reconnect_chan").await;
    c.expect("before").await;
    c.expect(":tmi.twitch.tv RECONNECT").await;
    c.expect_eof().await;
    assert_eq!(server.send("reconnect_chan", "after").await, 0);
    assert!(!server.wait_joined("reconnect_chan", Duration::ZERO).await);

    let mut again = RawClient::login(&server, "reconnect_bot").await;
    again.join("reconnect_chan").await;
    assert_eq!(server.joins("reconnect_chan"), 2);
}

#[tokio::test]
async fn drop_connections_closes_without_a_word() {
    let server = TestServer::shared();
    let mut c = RawClient::login(&server, "drop_bot").await;
    c.join("drop_chan").await;
    server.drop_connections("drop_chan").await;
    c.expect_eof().await;
    assert_eq!(server.send("drop_chan", "after").await, 0);
}

#[tokio::test]
async fn records_received_privmsg_without_echo() {
    let server = TestServer::shared();
    let mut c = RawClient::login(&server, "say_bot").await;
    c.join("say_chan").await;
    c.send("PRIVMSG #say_chan :hello world").await;
    c.send("@reply-parent-msg-id=abc PRIVMSG #Say_Chan :: second")
        .await;
    assert!(server.wait_received("say_chan", 2, STEP).await);
    assert_eq!(
        server.received("say_chan"),
        vec![
            ("say_bot".to_owned(), "hello world".to_owned()),
            ("say_bot".to_owned(), ": second".to_owned()),
        ]
    );
    let timed = server.received_at("say_chan");
    assert!(timed[0].at <= timed[1].at);
    // Not echoed: the next thing the client reads is the PONG.
    c.send("PING :x").await;
    c.expect(":tmi.twitch.tv PONG tmi.twitch.tv :x").await;
}

#[tokio::test]
async fn refused_join_closes_socket() {
    let server = TestServer::shared();
    server.set_refuse_joins("refuse_chan", true);
    let mut c = RawClient::login(&server, "refuse_bot").await;
    c.send("JOIN #refuse_chan").await;
    c.expect_eof().await;
    assert_eq!(server.join_attempts("refuse_chan"), 1);
    assert_eq!(server.joins("refuse_chan"), 0);
    assert!(!server.wait_joined("refuse_chan", Duration::ZERO).await);

    server.set_refuse_joins("refuse_chan", false);
    let mut c = RawClient::login(&server, "refuse_bot").await;
    c.join("refuse_chan").await;
    assert!(server.wait_joined("refuse_chan", STEP).await);
    assert_eq!(server.joins("refuse_chan"), 1);
    assert_eq!(server.join_attempts("refuse_chan"), 2);
}

#[tokio::test]
async fn slow_client_does_not_block_others() {
    let server = TestServer::shared();
    // Never reads: its socket buffers fill up and its writer blocks.
    let mut slow = RawClient::login(&server, "slow_bot").await;
    slow.join("slow_chan").await;
    let mut fast = RawClient::login(&server, "fast_bot").await;
    fast.join("fast_chan").await;

    let big: Vec<String> = (0..2000).map(|i| format!("{i:01000}")).collect();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(server.send_batch("slow_chan", &big).await, 1);
    }
    assert!(started.elapsed() < STEP, "send blocked on a slow client");
    assert_eq!(server.send("fast_chan", "still here").await, 1);
    fast.expect("still here").await;

    // A writer stuck on a full socket can still be cut.
    server.drop_connections("slow_chan").await;
    assert!(!server.wait_joined("slow_chan", Duration::ZERO).await);
}

mod twitch_irc_client {
    use super::*;
    use async_trait::async_trait;
    use twitch_irc::login::StaticLoginCredentials;
    use twitch_irc::message::ServerMessage;
    use twitch_irc::transport::tcp::{MakeConnection, TCPTransport, TCPTransportConnectError};
    use twitch_irc::{ClientConfig, TwitchIRCClient};

    /// Where `TestConnector` connects; twitch-irc's connector has no instance to carry it.
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();

    /// twitch-irc's TCP transport hard-codes Twitch's hostname; this points it here.
    struct TestConnector;

    #[async_trait]
    impl MakeConnection for TestConnector {
        type Socket = TcpStream;

        async fn new_socket() -> Result<TcpStream, TCPTransportConnectError> {
            let addr = ADDR
                .get()
                .copied()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no TMI test server"))?;
            Ok(TcpStream::connect(addr).await?)
        }
    }

    type Client = TwitchIRCClient<TCPTransport<TestConnector>, StaticLoginCredentials>;

    fn client(
        config: ClientConfig<StaticLoginCredentials>,
    ) -> (tokio::sync::mpsc::UnboundedReceiver<ServerMessage>, Client) {
        let server = TestServer::shared();
        ADDR.get_or_init(|| server.addr());
        Client::new(config)
    }

    /// The next PRIVMSG the client gets, skipping everything else.
    async fn next_privmsg(
        incoming: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
    ) -> twitch_irc::message::PrivmsgMessage {
        tokio::time::timeout(STEP, async {
            loop {
                match incoming.recv().await {
                    Some(ServerMessage::Privmsg(msg)) => return msg,
                    Some(_) => {}
                    None => panic!("client closed"),
                }
            }
        })
        .await
        .expect("timed out waiting for a PRIVMSG")
    }

    #[tokio::test]
    async fn receives_a_real_privmsg() {
        let server = TestServer::shared();
        let (mut incoming, client) = client(ClientConfig::default());
        client.join("wondible".to_owned()).expect("join");
        assert!(server.wait_joined("wondible", STEP).await);
        let line = "@badge-info=;badges=broadcaster/1;color=#1E90FF;display-name=wondible;emotes=;flags=;id=036fe963-8707-44a1-8fb2-e1412343825d;mod=0;room-id=56623426;subscriber=0;tmi-sent-ts=1546013301508;turbo=0;user-id=56623426;user-type= :wondible!wondible@wondible.tmi.twitch.tv PRIVMSG #wondible :test";
        assert_eq!(server.send("wondible", line).await, 1);
        let msg = next_privmsg(&mut incoming).await;
        assert_eq!(msg.sender.login, "wondible");
        assert_eq!(msg.message_text, "test");
        assert_eq!(msg.channel_login, "wondible");
    }

    #[tokio::test]
    async fn says_and_rejoins_after_reconnect() {
        let server = TestServer::shared();
        server.set_bot_badges("tmi_rejoin", "moderator/1");
        let (mut incoming, client) = client(ClientConfig::new_simple(StaticLoginCredentials::new(
            "cowatch_bot".to_owned(),
            Some("token".to_owned()),
        )));
        client.join("tmi_rejoin".to_owned()).expect("join");
        assert!(server.wait_joined("tmi_rejoin", STEP).await);
        let userstate = tokio::time::timeout(STEP, async {
            loop {
                if let Some(ServerMessage::UserState(msg)) = incoming.recv().await {
                    return msg;
                }
            }
        })
        .await
        .expect("USERSTATE");
        assert!(userstate.badges.iter().any(|b| b.name == "moderator"));

        client
            .privmsg("tmi_rejoin".to_owned(), "hello chat".to_owned())
            .await
            .expect("privmsg");
        assert!(server.wait_received("tmi_rejoin", 1, STEP).await);
        assert_eq!(
            server.received("tmi_rejoin"),
            vec![("cowatch_bot".to_owned(), "hello chat".to_owned())]
        );

        let started = Instant::now();
        server.reconnect("tmi_rejoin").await;
        assert!(
            server
                .wait_joined("tmi_rejoin", Duration::from_secs(10))
                .await
        );
        assert_eq!(server.joins("tmi_rejoin"), 2);
        server
            .send(
                "tmi_rejoin",
                "@badge-info=;badges=;color=;display-name=Viewer;emotes=;flags=;id=1;mod=0;room-id=12345;subscriber=0;tmi-sent-ts=1546013301508;turbo=0;user-id=42;user-type= :viewer!viewer@viewer.tmi.twitch.tv PRIVMSG #tmi_rejoin :back",
            )
            .await;
        let msg = next_privmsg(&mut incoming).await;
        assert_eq!(
            (msg.sender.login.as_str(), msg.message_text.as_str()),
            ("viewer", "back")
        );
        eprintln!("rejoined {:?} after RECONNECT", started.elapsed());
    }
}
