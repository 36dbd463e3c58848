//! Captures of raw Twitch IRC lines, replayed at their own pace or faster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// A capture, read once.
pub struct Capture {
    /// Where it was read from.
    pub path: PathBuf,
    /// The lines, in arrival order.
    pub lines: Vec<CaptureLine>,
}

/// One raw Twitch line and when it was sent, at 1x.
pub struct CaptureLine {
    /// The line, without CR/LF.
    pub text: String,
    /// Milliseconds after the first line by `tmi-sent-ts`, never before the previous line:
    /// captures are in arrival order, which their timestamps do not always follow, and
    /// lines are replayed in that order. Lines without a timestamp go with the previous.
    pub at_ms: u64,
    /// A chat message (PRIVMSG).
    pub privmsg: bool,
}

impl Capture {
    /// Reads a capture; one holding no PRIVMSG is refused.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the capture {}", path.display()))?;
        let mut first_ts = None;
        let mut at_ms = 0;
        let mut lines = Vec::new();
        for raw in text.lines() {
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() {
                continue;
            }
            if let Some(ts) = tag(raw, "tmi-sent-ts").and_then(|v| v.parse::<u64>().ok()) {
                let first = *first_ts.get_or_insert(ts);
                at_ms = at_ms.max(ts.saturating_sub(first));
            }
            lines.push(CaptureLine {
                text: raw.to_owned(),
                at_ms,
                privmsg: command(raw) == "PRIVMSG",
            });
        }
        let capture = Self {
            path: path.to_owned(),
            lines,
        };
        if capture.messages() == 0 {
            bail!(
                "the capture {} holds no PRIVMSG line to replay",
                path.display()
            );
        }
        Ok(capture)
    }

    /// Chat messages in the capture.
    pub fn messages(&self) -> usize {
        self.lines.iter().filter(|l| l.privmsg).count()
    }

    /// First to last line at 1x.
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.lines.last().map_or(0, |l| l.at_ms))
    }
}

/// The value of tag `key` of a raw IRC line, if it has one.
pub fn tag<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let tags = line.strip_prefix('@')?.split(' ').next()?;
    tags.split(';')
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The command of a raw IRC line: after the tags and the prefix.
pub fn command(line: &str) -> &str {
    let mut rest = line;
    if rest.starts_with('@') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    if rest.starts_with(':') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    rest.split(' ').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_commands_of_raw_lines() {
        let line = "@badge-info=;id=abc;tmi-sent-ts=1000 :u!u@u.tmi.twitch.tv PRIVMSG #c :hi";
        assert_eq!(tag(line, "id"), Some("abc"));
        assert_eq!(tag(line, "tmi-sent-ts"), Some("1000"));
        assert_eq!(tag(line, "badge-info"), Some(""));
        assert_eq!(tag(line, "nope"), None);
        // Only a whole key matches.
        assert_eq!(tag(line, "sent-ts"), None);
        assert_eq!(command(line), "PRIVMSG");
        assert_eq!(command(":tmi.twitch.tv RECONNECT"), "RECONNECT");
        assert_eq!(command(":tmi.twitch.tv CLEARCHAT #x"), "CLEARCHAT");
        assert_eq!(command("PING :tmi.twitch.tv"), "PING");
    }
}
