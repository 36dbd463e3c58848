//! The `cowatch` binary: parses the command line and wires the modules together.

use std::process::ExitCode;

use cowatch::broadcast::Broadcaster;
use cowatch::chat::bridge::Bridge;
use cowatch::cli::{Cli, Command};
use cowatch::config::PartyOptions;
use cowatch::edge::Edges;
use cowatch::ingest::Ingest;
use cowatch::library::Library;
use cowatch::moderation::Moderation;
use cowatch::moderation::helix::Helix;
use cowatch::overlay::chat::EmoteCache;
use cowatch::party::Party;
use cowatch::pipeline::Pipeline;
use cowatch::restream::Restream;
use cowatch::shutdown::Shutdown;
use cowatch::store::{Repair, Store};
use cowatch::{panel, shutdown, tools, twitch, web};

fn main() -> ExitCode {
    let cli = match Cli::from_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "cowatch=info,warn,rtc=error,rtc_dtls=error,webrtc=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(options) => run_party(options, true),
        Command::Party(options) => run_party(options, false),
        Command::Twitch(args) => args
            .command
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(twitch::command::main),
        Command::Probe(args) => tools::probe::main(args),
        Command::Bench(args) => tools::bench::main(args),
        Command::TwitchReplay(args) => tools::replay::main(args),
        Command::Ctl(args) => tools::ctl::main(args),
        Command::Receivers(args) => tools::load::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line of the party's summary on stdout. A stdout that has gone away (the terminal
/// closed, `cowatch party | head -3`) must not stop the party, as `println!` would by
/// panicking: the line is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How long stopping may wait for the tasks to end before the pipeline is stopped anyway
/// (the recording is finished in any case).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn run_party(options: PartyOptions, demo: bool) -> anyhow::Result<()> {
    let config = options.resolve(demo)?;
    // Before anything opens a descriptor: the caps are sized under the limit in force.
    let nofile = web::limit::raise_nofile()
        .map_err(|e| anyhow::anyhow!("cannot read the open-files limit: {e}"))?;
    let limits = web::limit::Limits::new(&config.limits, nofile);
    let (connections, chat_sockets) = limits.caps();
    tracing::info!(
        open_files = nofile,
        connections,
        chat_sockets,
        "open-files limit raised to the hard limit; connection caps sized under it (0: none)"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    // Boxed as a trait object: the party's one big future is compiled once rather than once
    // per scheduler the runtime might run it on.
    let party: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>> =
        Box::pin(async move {
            // Bind first: a busy port should fail before the pipeline spends seconds starting.
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot listen on {} (--listen): {e}", config.listen)
                })?;
            let addr = listener.local_addr()?;
            let shutdown = Shutdown::new();
            let record = config.settings.record.clone();
            // Before the pipeline: a damaged database should stop the start in a second, not
            // after the movie has opened.
            let store = open_store(&config.data_dir, config.repair)?;
            let pipeline = Pipeline::start(config.settings)?;
            let broadcaster =
                Broadcaster::start(config.broadcast.clone(), pipeline.clone(), &shutdown).await?;
            // The edges' keyframe requests join the viewers' at the broadcaster's gate: the
            // encoder makes at most one a second for all of them.
            let for_edges = broadcaster.clone();
            let edges = Edges::start(
                config.edges.clone(),
                pipeline.clone(),
                std::sync::Arc::new(move || for_edges.request_main_keyframe()),
                &shutdown,
            );
            let for_restream = broadcaster.clone();
            let restream = Restream::start(
                config.restream.clone(),
                pipeline.clone(),
                std::sync::Arc::new(move || for_restream.request_main_keyframe()),
                &shutdown,
            )?;
            let ingest = Ingest::start(config.ingest.clone(), pipeline.clone(), &shutdown)?;
            // Before the links that use it: a token already due is refreshed first.
            let sign_in = match config.sign_in.clone() {
                Some(sign_in) => Some(twitch::Session::start(sign_in, &shutdown).await),
                None => None,
            };
            let helix = config.helix.clone().map(Helix::new).transpose()?;
            // The chat hub comes with its moderation gate: no line reaches a viewer unchecked.
            let (moderation, chat) = Moderation::open(store.clone(), helix, config.chat.clone())?;
            let party = Party::new(config.party.clone(), store);
            // Nobody in the party may pass for the streamer.
            for name in config
                .twitch
                .iter()
                .map(|t| &t.channel)
                .chain(config.helix.iter().map(|h| &h.broadcaster_login))
            {
                party.reserve_nick(name);
            }
            let library = match &config.library {
                Some(dir) => Some(Library::open(dir, &config.data_dir.join("thumbnails"))?),
                None => None,
            };
            say!("cowatch is live");
            match party.invite() {
                Some(code) => say!("  viewer page: http://{addr}/?invite={}", code.expose()),
                None => say!("  viewer page: http://{addr}/"),
            }
            // The one place the host key is shown: the streamer's own terminal.
            say!(
                "  host:        http://{addr}/host#key={}",
                party.host_key().expose()
            );
            say!("  WHEP:        http://{addr}/whep");
            // OBS's WHIP settings; the ingest key may publish and nothing else.
            say!(
                "  WHIP:        http://{addr}/whip (camera and mic from OBS, a browser or a phone)"
            );
            if let Some(key) = ingest.key() {
                say!("  WHIP token:  {}", key.expose());
            }
            for target in restream.report() {
                say!("  restream:    {}", target.url);
            }
            say!("  health:      http://{addr}/healthz");
            say!("  WebRTC:      udp {}", broadcaster.advertised());
            for edge in edges.report() {
                say!("  edge:        {}", edge.url);
            }
            if let Some(path) = record {
                say!("  recording:   {}", path.display());
            }
            // Kept for the whole party: dropping it would end the Twitch link.
            let _bridge = config.twitch.clone().map(|twitch| {
                say!("  chat:        Twitch #{}", twitch.channel);
                if let Some(status) = sign_in.as_ref().map(cowatch::twitch::Session::status) {
                    match status.problem {
                        None => say!("  signed in:   Twitch as {}", status.login),
                        Some(problem) => say!("  signed in:   no: {problem}"),
                    }
                }
                Bridge::start(twitch, chat.clone(), &shutdown)
            });
            if config.log_chat {
                let path = config.data_dir.join("chat-log.jsonl");
                say!("  chat log:    {}", path.display());
                chat.spawn_log(path, &shutdown);
            }
            // The composite's chat column follows the same chat the page shows.
            panel::spawn(
                chat.clone(),
                pipeline.clone(),
                EmoteCache::default(),
                &shutdown,
            );
            let app = web::app(web::AppState {
                pipeline: pipeline.clone(),
                broadcaster,
                ingest,
                edges,
                restream,
                chat,
                party,
                moderation,
                library,
                twitch: sign_in,
                shutdown: shutdown.clone(),
                limits: limits.clone(),
            });
            limits.spawn_sweeper(&shutdown);
            let stop = shutdown.token();
            shutdown.spawn("signals", async move {
                tokio::select! {
                    () = shutdown::signal() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            });
            let stopping = shutdown.clone();
            // Each request knows its peer's address: the per-address limits key on it.
            let app = app.into_make_service_with_connect_info::<web::limit::Remote>();
            let served = axum::serve(limits.listener(listener), app)
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .await;
            tracing::info!("stopping");
            shutdown.finish(STOP_GRACE).await;
            // Last, so the recording gets everything the tasks sent until they stopped.
            pipeline.shutdown().await;
            served.map_err(|e| anyhow::anyhow!("web server: {e}"))
        });
    runtime.block_on(party)
}

/// The party's database, repaired first when `--repair` says so.
fn open_store(dir: &std::path::Path, repair: bool) -> anyhow::Result<Store> {
    let in_dir = |e: cowatch::store::StoreError| {
        anyhow::anyhow!("data directory {} (--data-dir): {e}", dir.display())
    };
    if repair {
        match Store::repair(dir).map_err(in_dir)? {
            Repair::Healthy => say!("  database:    healthy, nothing to repair"),
            Repair::Rebuilt { aside, kept, lost } => {
                let kept: Vec<String> = kept.iter().map(|(t, n)| format!("{n} {t}")).collect();
                say!(
                    "  database:    repaired; kept {}; the damaged file is {}",
                    kept.join(", "),
                    aside.display()
                );
                if !lost.is_empty() {
                    say!(
                        "  database:    nothing could be read from {}",
                        lost.join(", ")
                    );
                }
            }
        }
    }
    Store::open(dir).map_err(in_dir)
}
