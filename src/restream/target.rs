//! What a restream target is: its URL, kept whole for the one element that connects and
//! shown everywhere else without its stream key; and when to try it again after a failure.

use std::time::{Duration, Instant};

/// Where Twitch takes a stream when the streamer names no ingest server: its global
/// address, which picks the nearest one.
pub const TWITCH_INGEST: &str = "rtmp://live.twitch.tv/app";

/// What is shown instead of a stream key.
const HIDDEN: &str = "••••";

/// An RTMP(S) URL with its stream key. `Debug` and [`TargetUrl::shown`] never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl {
    full: String,
    shown: String,
    key: String,
}

impl TargetUrl {
    /// Reads `text`: `rtmp://host[:port]/app/KEY`, `rtmps://…`, or `twitch` for Twitch's own
    /// ingest. A URL without a stream key (`rtmp://host/app`, or `twitch`) takes
    /// `stream_key` (the `TWITCH_STREAM_KEY` environment variable). The error is one line
    /// and never contains the key.
    pub fn parse(text: &str, stream_key: Option<&str>) -> Result<TargetUrl, String> {
        let text = text.trim();
        let text = if text.eq_ignore_ascii_case("twitch") {
            TWITCH_INGEST
        } else {
            text
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            "a restream target is an rtmp:// or rtmps:// URL, like rtmp://live.twitch.tv/app/KEY, or \"twitch\"".to_owned()
        })?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "rtmp" | "rtmps") {
            return Err(format!(
                "restream targets are rtmp:// or rtmps:// URLs, not {scheme}://"
            ));
        }
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains('@') || host.chars().any(char::is_whitespace) {
            return Err(format!(
                "restream target {scheme}://{host}/…: the server name is missing or has credentials in it"
            ));
        }
        let (app, key) = path.split_once('/').unwrap_or((path, ""));
        if app.is_empty() {
            return Err(format!(
                "restream target {scheme}://{host}/ names no application (Twitch's is /app)"
            ));
        }
        let key = match (key.trim(), stream_key.map(str::trim)) {
            ("", Some(from_env)) if !from_env.is_empty() => from_env.to_owned(),
            ("", _) => {
                return Err(format!(
                    "restream target {scheme}://{host}/{app} has no stream key: add it (…/{app}/KEY) or set TWITCH_STREAM_KEY"
                ));
            }
            (key, _) => key.to_owned(),
        };
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "restream target {scheme}://{host}/{app}/{HIDDEN}: the stream key has spaces or control characters in it"
            ));
        }
        Ok(TargetUrl {
            full: format!("{scheme}://{host}/{app}/{key}"),
            shown: format!("{scheme}://{host}/{app}/{HIDDEN}"),
            key,
        })
    }

    /// The URL with its key, for the element that connects: nowhere else.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// The URL with its key hidden, for logs, `/healthz` and the host page.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `text` (a library's error message) with the URL and the key hidden.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.full, &self.shown)
            .replace(&self.key, HIDDEN)
    }
}

impl std::fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TargetUrl").field(&self.shown).finish()
    }
}

/// First wait after a failure.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// Longest wait: an RTMP server that comes back (a restarted nginx, Twitch's ingest after a
/// blip) is found again within this.
const LONGEST_WAIT: Duration = Duration::from_secs(2);
/// A connection that lasted this long was a success: the next failure starts over at
/// [`FIRST_WAIT`].
const STEADY: Duration = Duration::from_secs(30);

/// When to try a target again: doubling waits from half a second up to two (a refused TCP
/// connection costs the server nothing; a streamer wants the stream back), starting over
/// once a connection has held for half a minute.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
    connected_at: Option<Instant>,
}

impl Backoff {
    /// The connection came up at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection, or the attempt, failed at `now`: how long to wait before the next.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if self
            .connected_at
            .take()
            .is_some_and(|at| now.saturating_duration_since(at) >= STEADY)
        {
            self.failures = 0;
        }
        let wait = FIRST_WAIT
            .saturating_mul(1 << self.failures.min(8))
            .min(LONGEST_WAIT);
        self.failures = self.failures.saturating_add(1);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twitch_url_is_shown_without_its_key() {
        let url = TargetUrl::parse("rtmp://live.twitch.tv/app/live_123_abc", None).unwrap();
        assert_eq!(url.expose(), "rtmp://live.twitch.tv/app/live_123_abc");
        assert_eq!(url.shown(), "rtmp://live.twitch.tv/app/••••");
        assert!(!format!("{url:?}").contains("live_123"));
        assert_eq!(
            url.redact("could not write to rtmp://live.twitch.tv/app/live_123_abc (live_123_abc)"),
            "could not write to rtmp://live.twitch.tv/app/•••• (••••)"
        );
    }

    #[test]
    fn the_key_can_come_from_the_environment() {
        let url = TargetUrl::parse("twitch", Some("live_9")).unwrap();
        assert_eq!(url.expose(), "rtmp://live.twitch.tv/app/live_9");
        let url = TargetUrl::parse("rtmps://fra.contribute.live-video.net/app", Some("k")).unwrap();
        assert_eq!(url.expose(), "rtmps://fra.contribute.live-video.net/app/k");
        // A key in the URL wins over the environment's.
        let url = TargetUrl::parse("rtmp://127.0.0.1:1935/live/mine", Some("other")).unwrap();
        assert_eq!(url.expose(), "rtmp://127.0.0.1:1935/live/mine");
    }

    #[test]
    fn bad_targets_say_what_is_wrong_without_the_key() {
        let err = |text: &str, key: Option<&str>| TargetUrl::parse(text, key).unwrap_err();
        assert!(err("twitch", None).contains("TWITCH_STREAM_KEY"));
        assert!(err("http://example.com/app/k", None).contains("not http://"));
        assert!(err("live.twitch.tv/app/k", None).contains("rtmp://"));
        assert!(err("rtmp:///app/k", None).contains("server name"));
        assert!(err("rtmp://u:p@host/app/k", None).contains("credentials"));
        assert!(err("rtmp://host/", None).contains("no application"));
        let spaced = err("rtmp://host/app/sec ret", None);
        assert!(spaced.contains("spaces") && !spaced.contains("sec"));
    }

    #[test]
    fn waits_double_up_to_two_seconds_and_start_over_after_a_steady_connection() {
        let t0 = Instant::now();
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..5).map(|_| backoff.failed(t0).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 2000, 2000]);
        // A short connection does not reset the waits.
        backoff.connected(t0);
        assert_eq!(
            backoff.failed(t0 + Duration::from_secs(3)).as_millis(),
            2000
        );
        backoff.connected(t0);
        assert_eq!(backoff.failed(t0 + STEADY).as_millis(), 500);
    }
}
