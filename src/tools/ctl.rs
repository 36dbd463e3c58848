//! `cowatch ctl`: the JSON API from a terminal, for scripts, Stream Deck buttons and bots.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

/// Options of `cowatch ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The party's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// What to do.
    #[command(subcommand)]
    pub action: CtlCommand,
}

/// `cowatch ctl` actions; each is one `/api/` call (see the README's API list).
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// The party's state.
    Status,
    /// Resume the movie.
    Play,
    /// Pause the movie.
    Pause,
    /// Jump to a position: seconds, or m:ss / h:mm:ss.
    Seek {
        /// Where to.
        position: String,
    },
    /// The next title of the library.
    Next,
    /// Play a title of the library (its id, from `cowatch ctl library`).
    Load {
        /// Title id.
        title: String,
    },
    /// Switch layout: side-panel, inset.
    Layout {
        /// Layout name.
        name: String,
    },
    /// Webcam on or off.
    Webcam {
        /// on or off.
        state: Switch,
    },
    /// Mic on or off.
    Mic {
        /// on or off.
        state: Switch,
    },
    /// Movie volume, 0.0 to 1.5.
    Volume {
        /// The volume.
        volume: f64,
    },
    /// How many dB the movie ducks under your voice, 0 to 60.
    Duck {
        /// dB.
        db: f64,
    },
    /// Go live (optionally with a library title).
    Start {
        /// Title id.
        title: Option<String>,
    },
    /// End the party.
    End,
    /// The media library.
    Library,
    /// Who is watching.
    Viewers,
    /// Moderator links: list them, or add one.
    Mods {
        /// Mint a link for this person.
        #[arg(long)]
        add: Option<String>,
        /// Revoke this link id.
        #[arg(long)]
        revoke: Option<String>,
    },
    /// A moderator action as JSON, e.g. '{"action":"slow","seconds":30}'.
    Mod {
        /// The action.
        action: String,
    },
}

/// On or off.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Runs one `ctl` action against the server and prints the answer.
pub fn main(args: CtlArgs) -> anyhow::Result<()> {
    let CtlArgs { server, action } = args;
    let key = std::env::var("COWATCH_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    let request = Request::of(action)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(request.send(&server, key.as_deref()))?;
    println!("{answer}");
    Ok(())
}

/// The one `/api/` call an action makes.
struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Request {
    fn get(path: &str) -> Self {
        Self::new(Method::GET, path, None)
    }

    /// A POST with a JSON body, or none.
    fn post(path: &str, body: Option<Value>) -> Self {
        Self::new(Method::POST, path, body)
    }

    fn new(method: Method, path: &str, body: Option<Value>) -> Self {
        Self {
            method,
            path: path.to_owned(),
            body,
        }
    }

    fn of(action: CtlCommand) -> anyhow::Result<Self> {
        let on = |state: Switch| json!({ "on": matches!(state, Switch::On) });
        Ok(match action {
            CtlCommand::Status => Self::get("/api/party"),
            CtlCommand::Play => Self::post("/api/control/play", None),
            CtlCommand::Pause => Self::post("/api/control/pause", None),
            CtlCommand::Seek { position } => {
                let body = json!({ "position_s": parse_position(&position)? });
                Self::post("/api/control/seek", Some(body))
            }
            CtlCommand::Next => Self::post("/api/control/next", None),
            CtlCommand::Load { title } => {
                Self::post("/api/control/load", Some(json!({ "title": title })))
            }
            CtlCommand::Layout { name } => {
                Self::post("/api/control/layout", Some(json!({ "layout": name })))
            }
            CtlCommand::Webcam { state } => Self::post("/api/control/webcam", Some(on(state))),
            CtlCommand::Mic { state } => Self::post("/api/control/mic", Some(on(state))),
            CtlCommand::Volume { volume } => {
                Self::post("/api/control/audio", Some(json!({ "volume": volume })))
            }
            CtlCommand::Duck { db } => {
                Self::post("/api/control/audio", Some(json!({ "duck_db": db })))
            }
            CtlCommand::Start { title } => {
                Self::post("/api/party/start", Some(json!({ "title": title })))
            }
            CtlCommand::End => Self::post("/api/party/end", None),
            CtlCommand::Library => Self::get("/api/library"),
            CtlCommand::Viewers => Self::get("/api/viewers"),
            CtlCommand::Mods { add, revoke } => match (add, revoke) {
                (Some(label), None) => {
                    Self::post("/api/moderators", Some(json!({ "label": label })))
                }
                (None, Some(id)) => {
                    Self::new(Method::DELETE, &format!("/api/moderators/{id}"), None)
                }
                (None, None) => Self::get("/api/moderators"),
                (Some(_), Some(_)) => bail!("give --add or --revoke, not both"),
            },
            CtlCommand::Mod { action } => {
                let action: Value = serde_json::from_str(&action).context(
                    "the action is not JSON (e.g. '{\"action\":\"slow\",\"seconds\":30}')",
                )?;
                Self::post("/api/mod", Some(action))
            }
        })
    }

    /// Sends the request to `server` (with `key` as the bearer) and returns the answer.
    async fn send(self, server: &str, key: Option<&str>) -> anyhow::Result<String> {
        let url = format!("{}{}", server.trim_end_matches('/'), self.path);
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()?;
        let mut request = client.request(self.method, &url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = self.body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED && key.is_none() {
                " (set COWATCH_KEY to the key of your host or moderator link)"
            } else {
                ""
            };
            bail!("{status}: {}{hint}", text.trim());
        }
        Ok(text.trim().to_owned())
    }
}

/// `90`, `1:30` or `1:01:30` → seconds.
fn parse_position(text: &str) -> anyhow::Result<f64> {
    let mut seconds = 0.0;
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() > 3 {
        bail!("position {text:?}: use seconds, m:ss or h:mm:ss");
    }
    for part in parts {
        let value: f64 = part
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("position {text:?}: use seconds, m:ss or h:mm:ss"))?;
        seconds = seconds * 60.0 + value;
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::parse_position;

    #[test]
    fn positions_read_as_people_write_them() {
        assert_eq!(parse_position("90").unwrap(), 90.0);
        assert_eq!(parse_position("1:30").unwrap(), 90.0);
        assert_eq!(parse_position("1:01:30").unwrap(), 3690.0);
        assert!(parse_position("-3").is_err());
        assert!(parse_position("a:b").is_err());
        assert!(parse_position("1:2:3:4").is_err());
    }
}
