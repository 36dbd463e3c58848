//! `cowatch ctl`: the JSON API from a terminal, for scripts, Stream Deck buttons and bots.

use anyhow::{Context, bail};
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
    let (method, path, body) = request(action)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(call(&server, key.as_deref(), method, &path, body))?;
    println!("{answer}");
    Ok(())
}

/// The call an action makes.
fn request(action: CtlCommand) -> anyhow::Result<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let on = |s: Switch| matches!(s, Switch::On);
    Ok(match action {
        CtlCommand::Status => (Method::GET, "/api/party".into(), None),
        CtlCommand::Play => (Method::POST, "/api/control/play".into(), None),
        CtlCommand::Pause => (Method::POST, "/api/control/pause".into(), None),
        CtlCommand::Seek { position } => (
            Method::POST,
            "/api/control/seek".into(),
            Some(json!({ "position_s": parse_position(&position)? })),
        ),
        CtlCommand::Next => (Method::POST, "/api/control/next".into(), None),
        CtlCommand::Load { title } => (
            Method::POST,
            "/api/control/load".into(),
            Some(json!({ "title": title })),
        ),
        CtlCommand::Layout { name } => (
            Method::POST,
            "/api/control/layout".into(),
            Some(json!({ "layout": name })),
        ),
        CtlCommand::Webcam { state } => (
            Method::POST,
            "/api/control/webcam".into(),
            Some(json!({ "on": on(state) })),
        ),
        CtlCommand::Mic { state } => (
            Method::POST,
            "/api/control/mic".into(),
            Some(json!({ "on": on(state) })),
        ),
        CtlCommand::Volume { volume } => (
            Method::POST,
            "/api/control/audio".into(),
            Some(json!({ "volume": volume })),
        ),
        CtlCommand::Duck { db } => (
            Method::POST,
            "/api/control/audio".into(),
            Some(json!({ "duck_db": db })),
        ),
        CtlCommand::Start { title } => (
            Method::POST,
            "/api/party/start".into(),
            Some(json!({ "title": title })),
        ),
        CtlCommand::End => (Method::POST, "/api/party/end".into(), None),
        CtlCommand::Library => (Method::GET, "/api/library".into(), None),
        CtlCommand::Viewers => (Method::GET, "/api/viewers".into(), None),
        CtlCommand::Mods { add, revoke } => match (add, revoke) {
            (Some(label), None) => (
                Method::POST,
                "/api/moderators".into(),
                Some(json!({ "label": label })),
            ),
            (None, Some(id)) => (Method::DELETE, format!("/api/moderators/{id}"), None),
            (None, None) => (Method::GET, "/api/moderators".into(), None),
            (Some(_), Some(_)) => bail!("give --add or --revoke, not both"),
        },
        CtlCommand::Mod { action } => {
            let action: Value = serde_json::from_str(&action)
                .context("the action is not JSON (e.g. '{\"action\":\"slow\",\"seconds\":30}')")?;
            (Method::POST, "/api/mod".into(), Some(action))
        }
    })
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

async fn call(
    server: &str,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()?;
    let mut request = client.request(method, &url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
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
