//! Just enough of Janus's HTTP API (janus.plugin.streaming) for an origin: a session and a
//! handle on the streaming plugin, then synchronous plugin requests (`create`, `info`,
//! `destroy`) on it. Every request also keeps the session alive.

use std::time::Duration;

use serde_json::{Value, json};

use super::EdgeSecret;

/// A request that takes longer is an edge that does not answer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// Janus's code for "no such session" (it restarted, or timed our session out).
const NO_SUCH_SESSION: i64 = 458;
/// The streaming plugin's code for "no such mountpoint".
pub const NO_SUCH_MOUNTPOINT: i64 = 455;

/// What went wrong talking to an edge. One line, safe to show (no secret in it).
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// Nothing answered, or not in time.
    #[error("no answer: {0}")]
    Unreachable(String),
    /// Janus answered, but not with what its API promises.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Our session is gone (Janus restarted or timed it out).
    #[error("session gone")]
    SessionGone,
    /// The streaming plugin refused the request.
    #[error("streaming plugin error {code}: {reason}")]
    Plugin {
        /// Janus's error code.
        code: i64,
        /// Janus's text.
        reason: String,
    },
}

/// One edge's Janus HTTP API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// Our session and handle on one edge.
#[derive(Debug, Clone, Copy)]
pub struct Handle {
    session: u64,
    handle: u64,
}

/// A mountpoint's state, as `info` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountpointInfo {
    /// Viewers watching it.
    pub viewers: u64,
    /// UDP port our H.264 goes to.
    pub video_port: u16,
    /// UDP port for RTCP both ways (our reports in, the edge's keyframe requests out).
    pub video_rtcp_port: Option<u16>,
    /// UDP port our Opus goes to.
    pub audio_port: u16,
}

/// How the mountpoint carries our streams.
#[derive(Debug, Clone)]
pub struct MountpointSpec {
    /// Its id on the edge.
    pub id: u64,
    /// H.264 `a=fmtp`, the encoder's.
    pub video_fmtp: String,
}

impl Client {
    /// A client of the Janus HTTP API at `base` (`http://host:8088/janus`).
    pub fn new(base: &str) -> Result<Client, JanusError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The admin key travels in these bodies: straight to the edge, never via a proxy.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JanusError::Unreachable(e.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// A new session with a handle on the streaming plugin.
    pub async fn open(&self) -> Result<Handle, JanusError> {
        let created = self.post(&self.base, json!({"janus": "create"})).await?;
        let session = id_of(&created)?;
        let attached = self
            .post(
                &format!("{}/{session}", self.base),
                json!({"janus": "attach", "plugin": "janus.plugin.streaming"}),
            )
            .await?;
        Ok(Handle {
            session,
            handle: id_of(&attached)?,
        })
    }

    /// The mountpoint's state, or [`JanusError::Plugin`] with [`NO_SUCH_MOUNTPOINT`].
    pub async fn info(&self, at: Handle, id: u64) -> Result<MountpointInfo, JanusError> {
        let data = self
            .request(at, json!({"request": "info", "id": id}))
            .await?;
        parse_info(&data["info"])
    }

    /// Creates our RTP mountpoint, the edge picking free ports (read back with `info`).
    pub async fn create(
        &self,
        at: Handle,
        spec: &MountpointSpec,
        secret: Option<&EdgeSecret>,
    ) -> Result<(), JanusError> {
        let mut body = json!({
            "request": "create",
            "type": "rtp",
            "id": spec.id,
            "name": format!("cowatch-{}", spec.id),
            "description": "cowatch",
            "media": [
                {"type": "video", "mid": "v", "port": 0, "rtcpport": 0, "pt": 96,
                 "codec": "h264", "fmtp": spec.video_fmtp},
                {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
            ],
        });
        if let Some(secret) = secret {
            body["admin_key"] = Value::String(secret.expose().to_owned());
        }
        self.request(at, body).await.map(|_| ())
    }

    /// Removes our mountpoint (its viewers are hung up).
    pub async fn destroy(
        &self,
        at: Handle,
        id: u64,
        secret: Option<&EdgeSecret>,
    ) -> Result<(), JanusError> {
        let mut body = json!({"request": "destroy", "id": id});
        if let Some(secret) = secret {
            body["admin_key"] = Value::String(secret.expose().to_owned());
        }
        self.request(at, body).await.map(|_| ())
    }

    /// Ends the session.
    pub async fn close(&self, at: Handle) {
        let url = format!("{}/{}", self.base, at.session);
        let _ = self.post(&url, json!({"janus": "destroy"})).await;
    }

    /// A synchronous streaming-plugin request; returns the plugin's `data`.
    async fn request(&self, at: Handle, body: Value) -> Result<Value, JanusError> {
        let url = format!("{}/{}/{}", self.base, at.session, at.handle);
        let answer = self
            .post(&url, json!({"janus": "message", "body": body}))
            .await?;
        let data = &answer["plugindata"]["data"];
        if let Some(code) = data["error_code"].as_i64() {
            return Err(JanusError::Plugin {
                code,
                reason: data["error"].as_str().unwrap_or("").to_owned(),
            });
        }
        if data.is_null() {
            return Err(JanusError::Protocol("no plugin data".into()));
        }
        Ok(data.clone())
    }

    async fn post(&self, url: &str, mut body: Value) -> Result<Value, JanusError> {
        body["transaction"] = Value::String(crate::util::id::random_token(9));
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| JanusError::Unreachable(one_line(&e)))?;
        let answer: Value = response
            .json()
            .await
            .map_err(|e| JanusError::Protocol(one_line(&e)))?;
        match answer["janus"].as_str() {
            Some("success") | Some("ack") => Ok(answer),
            Some("error") => {
                let code = answer["error"]["code"].as_i64().unwrap_or(0);
                if code == NO_SUCH_SESSION {
                    return Err(JanusError::SessionGone);
                }
                Err(JanusError::Protocol(format!(
                    "error {code}: {}",
                    answer["error"]["reason"].as_str().unwrap_or("")
                )))
            }
            other => Err(JanusError::Protocol(format!("janus: {other:?}"))),
        }
    }
}

fn id_of(answer: &Value) -> Result<u64, JanusError> {
    answer["data"]["id"]
        .as_u64()
        .ok_or_else(|| JanusError::Protocol("no id in the answer".into()))
}

/// Reads `info`'s answer: viewers, and the ports of the video and audio media.
pub fn parse_info(info: &Value) -> Result<MountpointInfo, JanusError> {
    let media = info["media"]
        .as_array()
        .ok_or_else(|| JanusError::Protocol("mountpoint info without media".into()))?;
    let find = |kind: &str| media.iter().find(|m| m["type"] == kind);
    let port = |m: Option<&Value>, key: &str| {
        m.and_then(|m| m[key].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
    };
    let video = find("video");
    let audio = find("audio");
    Ok(MountpointInfo {
        viewers: info["viewers"].as_u64().unwrap_or(0),
        video_port: port(video, "port")
            .ok_or_else(|| JanusError::Protocol("mountpoint has no video port".into()))?,
        video_rtcp_port: port(video, "rtcpport"),
        audio_port: port(audio, "port")
            .ok_or_else(|| JanusError::Protocol("mountpoint has no audio port".into()))?,
    })
}

fn one_line(e: &reqwest::Error) -> String {
    // reqwest's chain names the URL and the cause; the URL holds no secret (it is in bodies).
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_viewers_and_ports() {
        // As Janus 1.1.2 answers `info` (trimmed).
        let info = json!({
            "id": 4242, "viewers": 3, "type": "live",
            "media": [
                {"mindex": 0, "type": "video", "mid": "v", "pt": 96, "codec": "h264",
                 "port": 41100, "rtcpport": 41101},
                {"mindex": 1, "type": "audio", "mid": "a", "pt": 111, "codec": "opus",
                 "port": 41102},
            ],
        });
        assert_eq!(
            parse_info(&info).unwrap(),
            MountpointInfo {
                viewers: 3,
                video_port: 41100,
                video_rtcp_port: Some(41101),
                audio_port: 41102
            }
        );
    }

    #[test]
    fn info_without_a_video_port_is_an_error() {
        let info = json!({"viewers": 0, "media": [{"type": "audio", "port": 5}]});
        let err = parse_info(&info).unwrap_err().to_string();
        assert!(err.contains("video port"), "{err}");
    }
}
