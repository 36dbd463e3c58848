//! Party options, from flags and the configuration file, merged: defaults < `--config` TOML
//! file < flags, then resolved into each module's settings.
//!
//! One struct serves both clap and serde, so every flag is also a config key with the same
//! name (`--duck-db 9` is `duck-db = 9`), and the `///` comments are the `--help` text. The
//! command line around it (the subcommands) is `cli`'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::broadcast::{self, BroadcastConfig};
use crate::chat::ChatConfig;
use crate::chat::bridge::BridgeConfig;
use crate::edge::{self, EdgeConfig, EdgeSecret};
use crate::moderation::helix::HelixConfig;
use crate::pipeline::ladder::Ladder;
use crate::pipeline::layout::Layout;
use crate::pipeline::layouts::LayoutFiles;
use crate::pipeline::presets::{self, EncoderPreset, SourceCatalog};
use crate::pipeline::source::{MicSource, MovieSource, WebcamSource};
use crate::pipeline::{self, Settings};
use crate::web::limit::LimitConfig;

mod twitch;

/// Options of a party. Every one can also be set in the `--config` file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartyOptions {
    /// The movie: a file path or a URI (file://, http(s)://, rtsp://…).
    #[arg(long, value_name = "PATH_OR_URI")]
    pub movie: Option<String>,
    /// Webcam: auto, none, test, v4l2:/dev/videoN, or a GStreamer source description.
    /// `auto` uses /dev/video0 when present, else the camera-off slate.
    #[arg(long)]
    pub webcam: Option<String>,
    /// Microphone: auto, none, test, or a GStreamer source description.
    #[arg(long)]
    pub mic: Option<String>,
    /// Layout: side-panel, inset, or a path to a layout .toml file.
    #[arg(long)]
    pub layout: Option<String>,
    /// Also record the encoded streams to this Matroska file (no second encode).
    #[arg(long, value_name = "OUT.mkv")]
    pub record: Option<PathBuf>,
    /// Address of the web server.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Video encoder preset: h264, vp8, or a path to a preset .toml file.
    #[arg(long)]
    pub encoder: Option<String>,
    /// Video bitrate in kbit/s.
    #[arg(long, value_name = "KBPS")]
    pub bitrate: Option<u32>,
    /// How many dB quieter the movie gets while you talk.
    #[arg(long, value_name = "DB")]
    pub duck_db: Option<f64>,
    /// Start the movie over when it ends instead of showing the intermission slate.
    #[arg(long = "loop", num_args = 0..=1, default_missing_value = "true")]
    #[serde(rename = "loop")]
    pub loop_movie: Option<bool>,
    /// Directory of editable pipeline parts (encoders/, layouts/, sources.toml, ladder.toml).
    #[arg(long, value_name = "DIR")]
    pub pipelines_dir: Option<PathBuf>,
    /// Stamp a machine-readable clock strip into the top-left corner of every frame, so a
    /// viewer page opened with `?timecode` (or `cowatch bench broadcast`) can measure
    /// glass-to-glass latency.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub timecode: Option<bool>,
    /// UDP port every viewer's WebRTC traffic goes through.
    #[arg(long, value_name = "PORT")]
    pub webrtc_port: Option<u16>,
    /// UDP port a publisher's camera and mic (WHIP: OBS, a browser, a phone) come in on;
    /// the default is the --webrtc-port plus one (8190).
    #[arg(long, value_name = "PORT")]
    pub whip_port: Option<u16>,
    /// The key OBS, a browser or a phone may publish a camera and mic with (WHIP's Bearer
    /// token), at least 16 characters; a new random one each start otherwise. Better given
    /// in the COWATCH_INGEST_KEY environment variable than as a flag.
    #[arg(
        long,
        value_name = "KEY",
        env = "COWATCH_INGEST_KEY",
        hide_env_values = true
    )]
    pub ingest_key: Option<String>,
    /// Also send the composite to this RTMP server (repeatable): `rtmp://host/app/KEY`,
    /// `rtmps://…`, or `twitch`. A URL without its stream key (`twitch`,
    /// `rtmp://host/app`) takes the TWITCH_STREAM_KEY environment variable. The video is the
    /// party's own H.264, not encoded again; the sound is AAC from the mix.
    #[arg(long = "restream", value_name = "URL")]
    #[serde(default)]
    pub restream: Vec<String>,
    /// Address viewers reach this machine at (put in ICE candidates); defaults to the
    /// --listen address, or 127.0.0.1 when that is 0.0.0.0.
    #[arg(long, value_name = "IP")]
    pub public_ip: Option<std::net::IpAddr>,
    /// Most viewers at once; the next one is told the party is full. A viewer counts once
    /// its connection is up (ICE and DTLS), not when its offer is answered.
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<usize>,
    /// Most offers answered but not yet connected, in total; past it a viewer is told to try
    /// again in a few seconds (503 with Retry-After). An offer that does not connect within 5 s
    /// is dropped [default: 32].
    #[arg(long, value_name = "N")]
    pub max_pending_offers: Option<usize>,
    /// Most offers answered but not yet connected from one address (an IPv6 /64 is one); past
    /// it that address gets 429 with Retry-After [default: 4].
    #[arg(long, value_name = "N")]
    pub max_pending_per_address: Option<usize>,
    /// Seconds an extra encoder (VP8, for browsers without H.264) keeps running after its
    /// last viewer left, so a viewer who reloads finds it warm [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub rendition_linger: Option<u32>,
    /// Twitch channel whose chat is shown beside the movie and in the composite (read
    /// anonymously unless --twitch-login is given).
    #[arg(long, value_name = "NAME")]
    pub twitch_channel: Option<String>,
    /// Twitch account to send with; its OAuth token comes from the TWITCH_OAUTH_TOKEN
    /// environment variable, never from a flag or file that could end up in a log. Not
    /// needed after `cowatch twitch login`: the stored sign-in names the account.
    #[arg(long, value_name = "NAME")]
    pub twitch_login: Option<String>,
    /// Plain-TCP Twitch-protocol IRC server to use instead of Twitch's (for tests).
    #[arg(long, value_name = "HOST:PORT")]
    pub twitch_irc_addr: Option<String>,
    /// Relay party viewers' messages to the Twitch channel as "[party] nick: text" through
    /// the --twitch-login account.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub relay_party_chat: Option<bool>,
    /// Helix (Twitch API) base URL for moderator actions; they are forwarded after
    /// `cowatch twitch login`, or when TWITCH_CLIENT_ID and TWITCH_OAUTH_TOKEN (a
    /// moderator-scoped token) are set.
    #[arg(long, value_name = "URL")]
    pub twitch_api_base: Option<String>,
    /// Twitch's OAuth base URL (id.twitch.tv), where a stored sign-in (`cowatch twitch
    /// login`) is refreshed (for tests).
    #[arg(long, value_name = "URL")]
    pub twitch_auth_base: Option<String>,
    /// Your Twitch app's client id, for Helix with TWITCH_OAUTH_TOKEN (a stored sign-in
    /// brings its own).
    #[arg(long, value_name = "ID", env = "TWITCH_CLIENT_ID")]
    pub twitch_client_id: Option<String>,
    /// Folder of movies the host dashboard offers.
    #[arg(long, value_name = "DIR")]
    pub library: Option<PathBuf>,
    /// Where bans, moderator links, blocked terms, the audit log and thumbnails are kept.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// When the database in the data directory is damaged, move it aside and start a new one
    /// with what can still be read from it (a healthy one is left alone).
    #[arg(long)]
    #[serde(skip)]
    pub repair: bool,
    /// Viewers need the invite link (a code in the URL), Teleparty-style.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub invite_only: Option<bool>,
    /// Keep the party chat in DATA_DIR/chat-log.jsonl (off: it is gone when the party ends).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub log_chat: Option<bool>,
    /// A Janus server that carries viewers past --max-viewers (repeatable): its HTTP API
    /// base, like http://edge1:8088/janus. Our stream is fed to a streaming mountpoint on
    /// each, and the viewer page is sent there (see --edge-policy).
    #[arg(long = "edge", value_name = "URL")]
    #[serde(default)]
    pub edge: Vec<String>,
    /// The edges' streaming-plugin admin_key, needed to create our mountpoint when they set
    /// one. Better given in the COWATCH_EDGE_SECRET environment variable than as a flag.
    #[arg(
        long,
        value_name = "KEY",
        env = "COWATCH_EDGE_SECRET",
        hide_env_values = true
    )]
    pub edge_secret: Option<EdgeSecret>,
    /// Which viewers go to an edge: `overflow` (only once the origin is full) or
    /// `least-loaded` (wherever has the fewest viewers) [default: overflow].
    #[arg(long, value_name = "POLICY")]
    pub edge_policy: Option<crate::edge::Policy>,
    /// `POST /whep` offers one address may make per minute, as a burst or spread out; 0: no
    /// limit [default: 60].
    #[arg(long, value_name = "N")]
    pub whep_per_minute: Option<u32>,
    /// `POST /api/session` requests (page loads) one address may make per minute; 0: no limit
    /// [default: 60].
    #[arg(long, value_name = "N")]
    pub session_per_minute: Option<u32>,
    /// `POST /api/chat` messages one address may send per minute, all its viewers together;
    /// 0: no limit [default: 300].
    #[arg(long, value_name = "N")]
    pub chat_per_minute: Option<u32>,
    /// TCP connections one address may hold; 0: no limit [default: 512].
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Chat sockets (open viewer pages) one address may hold; 0: no limit [default: 256].
    #[arg(long, value_name = "N")]
    pub max_chat_sockets_per_address: Option<usize>,
    /// TCP connections in total, chat sockets at most three quarters of them; 0: no limit
    /// [default: the open-files limit less an eighth (at least 128) for everything else].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Behind a reverse proxy: take each client's address from the last X-Forwarded-For entry
    /// (the proxy must set it). The per-address connection cap is then not applied.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded: Option<bool>,
    /// TOML file with any of these options; flags win over it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// A configuration problem, as one line naming the file or flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<pipeline::PipelineError> for ConfigError {
    fn from(e: pipeline::PipelineError) -> Self {
        Self(e.to_string())
    }
}

/// Default web address: loopback, so nothing is exposed until the streamer says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default data folder, beside where cowatch runs.
pub const DEFAULT_DATA_DIR: &str = "./cowatch-data";

/// What `demo` and `party` need to run.
#[derive(Debug, Clone)]
pub struct PartyConfig {
    /// Pipeline settings.
    pub settings: Settings,
    /// Web server address.
    pub listen: SocketAddr,
    /// WebRTC fan-out.
    pub broadcast: BroadcastConfig,
    /// WHIP ingest: where publishers send, and the key they may use besides the host's.
    pub ingest: crate::ingest::IngestConfig,
    /// The chat hub.
    pub chat: ChatConfig,
    /// The Twitch link, when a channel is given.
    pub twitch: Option<BridgeConfig>,
    /// Helix forwarding of moderator actions, when configured.
    pub helix: Option<HelixConfig>,
    /// The stored Twitch sign-in the bridge and Helix use, kept fresh while the party runs.
    pub sign_in: Option<crate::twitch::SignInConfig>,
    /// The media library folder.
    pub library: Option<PathBuf>,
    /// The data folder.
    pub data_dir: PathBuf,
    /// Repair a damaged database before opening it (`--repair`).
    pub repair: bool,
    /// Keys and invite.
    pub party: crate::party::PartyConfig,
    /// Keep party chat on disk.
    pub log_chat: bool,
    /// Janus edges.
    pub edges: EdgeConfig,
    /// RTMP targets (`--restream`).
    pub restream: crate::restream::RestreamConfig,
    /// What one address, and everyone together, may take of the web server.
    pub limits: LimitConfig,
}

impl PartyOptions {
    /// Merges the `--config` file under the flags.
    pub fn merged(self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Self::from_file(&path)?;
        Ok(Self {
            movie: self.movie.or(file.movie),
            webcam: self.webcam.or(file.webcam),
            mic: self.mic.or(file.mic),
            layout: self.layout.or(file.layout),
            record: self.record.or(file.record),
            listen: self.listen.or(file.listen),
            encoder: self.encoder.or(file.encoder),
            bitrate: self.bitrate.or(file.bitrate),
            duck_db: self.duck_db.or(file.duck_db),
            loop_movie: self.loop_movie.or(file.loop_movie),
            pipelines_dir: self.pipelines_dir.or(file.pipelines_dir),
            timecode: self.timecode.or(file.timecode),
            webrtc_port: self.webrtc_port.or(file.webrtc_port),
            whip_port: self.whip_port.or(file.whip_port),
            ingest_key: self.ingest_key.or(file.ingest_key),
            restream: if self.restream.is_empty() {
                file.restream
            } else {
                self.restream
            },
            public_ip: self.public_ip.or(file.public_ip),
            max_viewers: self.max_viewers.or(file.max_viewers),
            max_pending_offers: self.max_pending_offers.or(file.max_pending_offers),
            max_pending_per_address: self
                .max_pending_per_address
                .or(file.max_pending_per_address),
            rendition_linger: self.rendition_linger.or(file.rendition_linger),
            twitch_channel: self.twitch_channel.or(file.twitch_channel),
            twitch_login: self.twitch_login.or(file.twitch_login),
            twitch_irc_addr: self.twitch_irc_addr.or(file.twitch_irc_addr),
            relay_party_chat: self.relay_party_chat.or(file.relay_party_chat),
            twitch_api_base: self.twitch_api_base.or(file.twitch_api_base),
            twitch_auth_base: self.twitch_auth_base.or(file.twitch_auth_base),
            twitch_client_id: self.twitch_client_id.or(file.twitch_client_id),
            library: self.library.or(file.library),
            data_dir: self.data_dir.or(file.data_dir),
            repair: self.repair,
            invite_only: self.invite_only.or(file.invite_only),
            log_chat: self.log_chat.or(file.log_chat),
            edge: if self.edge.is_empty() {
                file.edge
            } else {
                self.edge
            },
            edge_secret: self.edge_secret.or(file.edge_secret),
            edge_policy: self.edge_policy.or(file.edge_policy),
            whep_per_minute: self.whep_per_minute.or(file.whep_per_minute),
            session_per_minute: self.session_per_minute.or(file.session_per_minute),
            chat_per_minute: self.chat_per_minute.or(file.chat_per_minute),
            max_connections_per_address: self
                .max_connections_per_address
                .or(file.max_connections_per_address),
            max_chat_sockets_per_address: self
                .max_chat_sockets_per_address
                .or(file.max_chat_sockets_per_address),
            max_connections: self.max_connections.or(file.max_connections),
            trust_forwarded: self.trust_forwarded.or(file.trust_forwarded),
            config: Some(path),
        })
    }

    /// Reads a config file; a file the user named but that is missing is an error.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read config file {} (--config): {e}",
                path.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "config file {}: {}",
                path.display(),
                presets::one_line(&e)
            ))
        })
    }

    /// Resolves everything into pipeline settings. `demo` supplies the generated movie and the
    /// test webcam when the user did not choose others.
    pub fn resolve(self, demo: bool) -> Result<PartyConfig, ConfigError> {
        let options = self.merged()?;
        let dir = options
            .pipelines_dir
            .clone()
            .unwrap_or_else(presets::default_dir);
        let catalog = SourceCatalog::load(&dir)?;
        let movie = match (&options.movie, demo) {
            (Some(spec), _) => MovieSource::parse(spec)?,
            (None, true) => MovieSource::demo(&catalog),
            (None, false) => {
                return Err(ConfigError(
                    "no movie given: pass --movie PATH_OR_URI (or set `movie` in the config file)"
                        .into(),
                ));
            }
        };
        let default_webcam = if demo { "test" } else { "auto" };
        let default_mic = if demo { "none" } else { "auto" };
        let webcam = WebcamSource::parse(
            options.webcam.as_deref().unwrap_or(default_webcam),
            &catalog,
        );
        let mic_spec = options.mic.as_deref().unwrap_or(default_mic);
        let mic = MicSource::parse(mic_spec, &catalog);
        if mic_spec == "auto" && mic == MicSource::None {
            // One line instead of the sound libraries' noise (see `capture_device_likely`).
            tracing::warn!("no microphone found; continuing with movie sound only");
        }
        let layout_spec = options.layout.as_deref().unwrap_or("side-panel");
        let layout =
            Layout::load(layout_spec).map_err(|e| ConfigError(format!("{e} (--layout)")))?;
        let encoder = EncoderPreset::load(options.encoder.as_deref().unwrap_or("h264"), &dir)?;
        let ladder = Ladder::load(&dir)?;
        let bitrate_kbps = options.bitrate.unwrap_or(pipeline::DEFAULT_BITRATE_KBPS);
        if !(100..=50_000).contains(&bitrate_kbps) {
            return Err(ConfigError(format!(
                "bitrate {bitrate_kbps} kbit/s (--bitrate) is out of range: use 100 to 50000"
            )));
        }
        let duck_db = options.duck_db.unwrap_or(pipeline::DEFAULT_DUCK_DB);
        // The pipeline's own check, the one the host's controls pass too.
        pipeline::AudioChange::checked(None, Some(duck_db))
            .map_err(|e| ConfigError(format!("{e} (--duck-db)")))?;
        if let Some(record) = &options.record
            && let Some(parent) = record.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(ConfigError(format!(
                "cannot record to {} (--record): directory {} does not exist",
                record.display(),
                parent.display()
            )));
        }
        let listen = options
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
        let max_viewers = options
            .max_viewers
            .unwrap_or(broadcast::DEFAULT_MAX_VIEWERS);
        if max_viewers == 0 {
            return Err(ConfigError("--max-viewers must be at least 1".into()));
        }
        let seats = broadcast::SeatLimits {
            max_viewers,
            max_pending: options
                .max_pending_offers
                .unwrap_or(broadcast::DEFAULT_MAX_PENDING),
            max_pending_per_address: options
                .max_pending_per_address
                .unwrap_or(broadcast::DEFAULT_MAX_PENDING_PER_ADDRESS),
        };
        if seats.max_pending == 0 || seats.max_pending_per_address == 0 {
            return Err(ConfigError(
                "--max-pending-offers and --max-pending-per-address must be at least 1: no \
                 viewer could ever connect"
                    .into(),
            ));
        }
        let port = options.webrtc_port.unwrap_or(broadcast::DEFAULT_PORT);
        let rendition_linger = options
            .rendition_linger
            .map_or(broadcast::RENDITION_LINGER, |s| {
                std::time::Duration::from_secs(s.into())
            });
        let broadcast = match options.public_ip {
            // Behind NAT or on a public address: listen everywhere, advertise what was given.
            Some(ip) => BroadcastConfig {
                bind: SocketAddr::new(unspecified_like(ip), port),
                advertise: SocketAddr::new(ip, port),
                seats,
                rendition_linger,
            },
            None => {
                let ip = if listen.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    listen.ip()
                };
                BroadcastConfig {
                    bind: SocketAddr::new(ip, port),
                    advertise: SocketAddr::new(ip, port),
                    seats,
                    rendition_linger,
                }
            }
        };
        // Beside the WebRTC port; a WebRTC port of 0 (any free one) makes this any free one too.
        let whip_port = options.whip_port.unwrap_or(match port {
            0 => 0,
            p => p.checked_add(1).unwrap_or(crate::ingest::DEFAULT_PORT),
        });
        let ingest_key = match options.ingest_key.as_deref().map(str::trim) {
            Some(key) if key.len() >= 16 => crate::party::Key::new(key),
            Some(key) if !key.is_empty() => {
                return Err(ConfigError(
                    "--ingest-key (COWATCH_INGEST_KEY) must be at least 16 characters".into(),
                ));
            }
            _ => crate::party::Key::random(),
        };
        let ingest = crate::ingest::IngestConfig {
            bind: SocketAddr::new(broadcast.bind.ip(), whip_port),
            advertise: SocketAddr::new(broadcast.advertise.ip(), whip_port),
            key: Some(ingest_key),
        };
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let twitch::Links {
            bridge: twitch,
            helix,
            sign_in,
        } = twitch::links(&options, &data_dir)?;
        let relay_party = options.relay_party_chat.unwrap_or(false);
        if relay_party && twitch.as_ref().is_none_or(|t| t.credentials.is_none()) {
            return Err(ConfigError(
                "--relay-party-chat needs --twitch-channel and a sending account: \
                 `cowatch twitch login`, or --twitch-login with TWITCH_OAUTH_TOKEN set"
                    .into(),
            ));
        }
        if let Some(dir) = &options.library
            && !dir.is_dir()
        {
            return Err(ConfigError(format!(
                "media library {} (--library): no such directory",
                dir.display()
            )));
        }
        let host_key = key_from_env("COWATCH_HOST_KEY")?;
        let edges = EdgeConfig {
            urls: options
                .edge
                .iter()
                .map(|url| edge::check_url(url))
                .collect::<Result<_, _>>()
                .map_err(ConfigError)?,
            secret: options
                .edge_secret
                .clone()
                .filter(|s| !s.expose().trim().is_empty()),
            policy: options.edge_policy.unwrap_or_default(),
        };
        if !edges.urls.is_empty() && !encoder.codec.eq_ignore_ascii_case("h264") {
            return Err(ConfigError(format!(
                "--edge needs the H.264 encoder (--encoder h264, not {}): the edges' mountpoints \
                 carry H.264",
                encoder.codec
            )));
        }
        let stream_key = std::env::var("TWITCH_STREAM_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        let restream = crate::restream::RestreamConfig {
            targets: options
                .restream
                .iter()
                .map(|text| crate::restream::TargetUrl::parse(text, stream_key.as_deref()))
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError(format!("--restream: {e}")))?,
            stream_key: stream_key.map(crate::restream::StreamKey::new),
        };
        if !restream.targets.is_empty() && !encoder.codec.eq_ignore_ascii_case("h264") {
            return Err(ConfigError(format!(
                "--restream needs the H.264 encoder (--encoder h264, not {}): the composite is \
                 sent as encoded, and RTMP carries H.264",
                encoder.codec
            )));
        }
        let invite = options
            .invite_only
            .unwrap_or(false)
            .then(|| crate::party::Key::new(crate::util::id::random_token(9)));
        let layouts = LayoutFiles::new([dir.clone(), data_dir.clone()], options.layout.clone());
        let defaults = LimitConfig::default();
        let limits = LimitConfig {
            whep_per_minute: options.whep_per_minute.unwrap_or(defaults.whep_per_minute),
            session_per_minute: options
                .session_per_minute
                .unwrap_or(defaults.session_per_minute),
            chat_per_minute: options.chat_per_minute.unwrap_or(defaults.chat_per_minute),
            connections_per_address: options
                .max_connections_per_address
                .unwrap_or(defaults.connections_per_address),
            chat_sockets_per_address: options
                .max_chat_sockets_per_address
                .unwrap_or(defaults.chat_sockets_per_address),
            connections: options.max_connections,
            trust_forwarded: options.trust_forwarded.unwrap_or(false),
        };
        Ok(PartyConfig {
            ingest,
            limits,
            helix,
            sign_in,
            library: options.library.clone(),
            data_dir,
            repair: options.repair,
            party: crate::party::PartyConfig { host_key, invite },
            log_chat: options.log_chat.unwrap_or(false),
            edges,
            restream,
            chat: ChatConfig {
                relay_party,
                ..ChatConfig::default()
            },
            twitch,
            settings: Settings {
                movie,
                loop_movie: options.loop_movie.unwrap_or(demo),
                webcam,
                mic,
                layout,
                layouts,
                encoder,
                bitrate_kbps,
                ladder,
                duck_db,
                record: options.record,
                timecode: options.timecode.unwrap_or(false),
            },
            listen,
            broadcast,
        })
    }
}

/// A key from the environment variable `name` (at least 16 characters), or a random one.
fn key_from_env(name: &str) -> Result<crate::party::Key, ConfigError> {
    match std::env::var(name) {
        Ok(key) if key.trim().len() >= 16 => Ok(crate::party::Key::new(key.trim())),
        Ok(key) if !key.trim().is_empty() => Err(ConfigError(format!(
            "{name} must be at least 16 characters"
        ))),
        _ => Ok(crate::party::Key::random()),
    }
}

fn unspecified_like(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("cowatch-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_win_over_the_file() {
        let path = write(
            "a.toml",
            "bitrate = 1000\nlayout = \"inset\"\nduck-db = 6.0\n",
        );
        let options = PartyOptions {
            bitrate: Some(3000),
            config: Some(path.clone()),
            ..Default::default()
        }
        .merged()
        .unwrap();
        assert_eq!(options.bitrate, Some(3000));
        assert_eq!(options.layout.as_deref(), Some("inset"));
        assert_eq!(options.duck_db, Some(6.0));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_key_names_the_key_and_file() {
        let path = write("b.toml", "bitrat = 1000\n");
        let err = PartyOptions::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("bitrat"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains('\n'), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = PartyOptions {
            config: Some("/nonexistent/cowatch.toml".into()),
            ..Default::default()
        }
        .merged()
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/cowatch.toml"), "{err}");
    }

    #[test]
    fn demo_resolves_without_any_option() {
        let config = PartyOptions::default().resolve(true).unwrap();
        assert!(matches!(
            config.settings.movie,
            MovieSource::Generated { .. }
        ));
        assert!(config.settings.loop_movie);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn edges_come_from_the_file_and_the_flags_win() {
        let path = write(
            "e.toml",
            "edge = [\"http://edge1:8088/janus/\"]\nedge-policy = \"least-loaded\"\nedge-secret = \"s3cret\"\n",
        );
        let from_file = PartyOptions {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve(true)
        .unwrap()
        .edges;
        assert_eq!(from_file.urls, vec!["http://edge1:8088/janus".to_owned()]);
        assert_eq!(from_file.policy, crate::edge::Policy::LeastLoaded);
        assert!(from_file.secret.unwrap().matches("s3cret"));
        let flags = PartyOptions {
            edge: vec!["http://edge2:8088/janus".into()],
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve(true)
        .unwrap()
        .edges;
        assert_eq!(flags.urls, vec!["http://edge2:8088/janus".to_owned()]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn limits_come_from_the_file_and_the_flags_win() {
        let defaults = PartyOptions::default().resolve(true).unwrap().limits;
        assert_eq!(defaults, LimitConfig::default());
        let path = write(
            "l.toml",
            "whep-per-minute = 10\nchat-per-minute = 0\nmax-connections = 500\ntrust-forwarded = true\n",
        );
        let limits = PartyOptions {
            whep_per_minute: Some(20),
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve(true)
        .unwrap()
        .limits;
        assert_eq!(limits.whep_per_minute, 20);
        assert_eq!(limits.chat_per_minute, 0);
        assert_eq!(limits.connections, Some(500));
        assert!(limits.trust_forwarded);
        assert_eq!(limits.session_per_minute, defaults.session_per_minute);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_bad_edge_url_names_the_flag() {
        let err = PartyOptions {
            edge: vec!["edge1:8088".into()],
            ..Default::default()
        }
        .resolve(true)
        .unwrap_err()
        .to_string();
        assert!(err.contains("--edge"), "{err}");
    }

    #[test]
    fn restream_targets_are_checked_at_start_and_need_h264() {
        let resolve = |restream: &str, encoder: Option<&str>| {
            PartyOptions {
                restream: vec![restream.into()],
                encoder: encoder.map(Into::into),
                ..Default::default()
            }
            .resolve(true)
        };
        let ok = resolve("rtmp://127.0.0.1/live/some-key", None).unwrap();
        assert_eq!(ok.restream.targets[0].shown(), "rtmp://127.0.0.1/live/••••");
        let err = resolve("https://example.com/live/k", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--restream: ") && err.contains("not https://"),
            "{err}"
        );
        let err = resolve("rtmp://127.0.0.1/live/k", Some("vp8"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--restream needs the H.264 encoder"), "{err}");
    }

    #[test]
    fn an_ingest_key_must_be_long_enough() {
        let err = PartyOptions {
            ingest_key: Some("short".into()),
            ..Default::default()
        }
        .resolve(true)
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--ingest-key") && !err.contains("short"),
            "{err}"
        );
    }

    #[test]
    fn edges_need_h264() {
        let err = PartyOptions {
            edge: vec!["http://edge1:8088/janus".into()],
            encoder: Some("vp8".into()),
            ..Default::default()
        }
        .resolve(true)
        .unwrap_err()
        .to_string();
        assert!(err.contains("--edge needs the H.264 encoder"), "{err}");
    }

    #[test]
    fn party_without_movie_says_so() {
        let err = PartyOptions::default()
            .resolve(false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--movie"), "{err}");
    }
}
