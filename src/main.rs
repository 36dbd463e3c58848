//! The `cowatch` binary: parses the command line and wires the modules together.

use std::process::ExitCode;

use cowatch::broadcast::Broadcaster;
use cowatch::chat::bridge::Bridge;
use cowatch::cli::{Cli, Command};
use cowatch::config::PartyOptions;
use cowatch::library::Library;
use cowatch::moderation::Moderation;
use cowatch::moderation::helix::Helix;
use cowatch::party::Party;
use cowatch::pipeline::Pipeline;
use cowatch::store::Store;
use cowatch::{shutdown, tools, web};
use tokio_util::sync::CancellationToken;

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
        Command::Probe(args) => tools::probe::main(args),
        Command::Bench(args) => tools::bench::main(args),
        Command::TwitchReplay(args) => tools::replay::main(args),
        Command::Ctl(args) => tools::ctl::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_party(options: PartyOptions, demo: bool) -> anyhow::Result<()> {
    let config = options.resolve(demo)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        // Bind first: a busy port should fail before the pipeline spends seconds starting.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", config.listen))?;
        let record = config.settings.record.clone();
        let pipeline = Pipeline::start(config.settings)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let broadcaster =
            Broadcaster::start(config.broadcast.clone(), pipeline.clone(), stop.clone()).await?;
        let addr = listener.local_addr()?;
        let store = Store::open(&config.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "data directory {} (--data-dir): {e}",
                config.data_dir.display()
            )
        })?;
        let helix = config.helix.clone().map(Helix::new).transpose()?;
        // The chat hub comes with its moderation gate: no line reaches a viewer unchecked.
        let (moderation, chat) = Moderation::open(store.clone(), helix, config.chat.clone())?;
        // Stops the chat's tasks (the Twitch link, the chat log) at shutdown.
        let stop = CancellationToken::new();
        let party = Party::new(config.party.clone(), store);
        let library = match &config.library {
            Some(dir) => Some(Library::open(dir, &config.data_dir.join("thumbnails"))?),
            None => None,
        };
        println!("cowatch is live");
        match party.invite() {
            Some(code) => println!("  viewer page: http://{addr}/?invite={}", code.expose()),
            None => println!("  viewer page: http://{addr}/"),
        }
        // The one place the host key is shown: the streamer's own terminal.
        println!(
            "  host:        http://{addr}/host#key={}",
            party.host_key().expose()
        );
        println!("  WHEP:        http://{addr}/whep");
        println!("  health:      http://{addr}/healthz");
        println!("  WebRTC:      udp {}", config.broadcast.advertise);
        if let Some(path) = record {
            println!("  recording:   {}", path.display());
        }
        // Kept alive for the whole party; dropping it disconnects from Twitch.
        let _bridge = config.twitch.clone().map(|twitch| {
            println!("  chat:        Twitch #{}", twitch.channel);
            Bridge::start(twitch, chat.clone(), stop.clone())
        });
        if config.log_chat {
            let path = config.data_dir.join("chat-log.jsonl");
            println!("  chat log:    {}", path.display());
            chat.spawn_log(path, stop.clone());
        }
        // The composite's chat column follows the same chat the page shows.
        let _panel = cowatch::panel::spawn(
            chat.clone(),
            pipeline.clone(),
            cowatch::overlay::chat::EmoteCache::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        let app = web::app(web::AppState {
            pipeline: pipeline.clone(),
            broadcaster,
            chat,
            party,
            moderation,
            library,
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown::signal())
            .await;
        tracing::info!("stopping");
        stop.cancel();
        pipeline.shutdown().await;
        served.map_err(|e| anyhow::anyhow!("web server: {e}"))
    })
}
