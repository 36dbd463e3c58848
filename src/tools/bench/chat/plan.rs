//! What one replay sends, and when: the capture's lines due within the longest replay at a
//! rate, their message ids made unique to the rate and run so every replay is told apart from
//! the backlog of the ones before it.

use std::time::Duration;

use super::rate_label;
use crate::tools::replay::Capture;

/// `line` with `suffix` appended to its `id` tag, and that new id.
fn with_id_suffix(line: &str, suffix: &str) -> (String, Option<String>) {
    let Some((tags, rest)) = line.strip_prefix('@').and_then(|l| l.split_once(' ')) else {
        return (line.to_owned(), None);
    };
    let mut out = String::with_capacity(line.len() + suffix.len() + 1);
    let mut id = None;
    out.push('@');
    for (i, kv) in tags.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(kv);
        if let Some(value) = kv.strip_prefix("id=") {
            out.push_str(suffix);
            id = Some(format!("{value}{suffix}"));
        }
    }
    out.push(' ');
    out.push_str(rest);
    (out, id)
}

/// What one replay sends, and when.
pub(super) struct Plan {
    pub(super) rate: f64,
    /// The lines, ids rewritten.
    pub(super) lines: Vec<String>,
    /// When each line is due, after the start of the replay.
    pub(super) due: Vec<Duration>,
    /// For each line, the index of its message among `ids` when it is a tracked PRIVMSG.
    pub(super) message_of: Vec<Option<u32>>,
    /// The PRIVMSG ids, as rewritten.
    pub(super) ids: Vec<String>,
    /// Lines in the whole capture, to say what part was replayed.
    pub(super) capture_lines: usize,
}

impl Plan {
    /// The lines due within `max` at `rate`, their ids made unique to this rate and run.
    pub(super) fn new(capture: &Capture, rate: f64, max: Duration, run: usize) -> Self {
        let suffix = format!("-r{rate}-{run}");
        let mut plan = Self {
            rate,
            lines: Vec::new(),
            due: Vec::new(),
            message_of: Vec::new(),
            ids: Vec::new(),
            capture_lines: capture.lines.len(),
        };
        for line in &capture.lines {
            let due = Duration::from_secs_f64(line.at_ms as f64 / 1000.0 / rate);
            // `at_ms` never decreases, so nothing later is due sooner.
            if due > max {
                break;
            }
            let (text, id) = with_id_suffix(&line.text, &suffix);
            let message = match id {
                Some(id) if line.privmsg => {
                    plan.ids.push(id);
                    Some(plan.ids.len() as u32 - 1)
                }
                _ => None,
            };
            plan.lines.push(text);
            plan.due.push(due);
            plan.message_of.push(message);
        }
        plan
    }

    /// Time from the first line to the last, as scheduled.
    pub(super) fn span(&self) -> Duration {
        self.due.last().copied().unwrap_or_default()
    }

    pub(super) fn describe(&self, max: Duration) -> String {
        let part = if self.lines.len() == self.capture_lines {
            "the whole capture".to_owned()
        } else {
            format!(
                "its first {:.0} s (--max-seconds {})",
                self.span().as_secs_f64() * self.rate,
                max.as_secs()
            )
        };
        format!(
            "{}: replays {part}: {} lines, {} messages, in {:.1} s",
            rate_label(self.rate),
            self.lines.len(),
            self.ids.len(),
            self.span().as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVMSG: &str = "@badge-info=;id=abc;room-id=1;tmi-sent-ts=1000;user-id=7 \
                           :u!u@u.tmi.twitch.tv PRIVMSG #xqcow :hi id=x";

    #[test]
    fn only_the_id_tag_is_rewritten() {
        let (line, id) = with_id_suffix(PRIVMSG, "-r100-1");
        assert_eq!(id.as_deref(), Some("abc-r100-1"));
        assert!(line.contains(";id=abc-r100-1;room-id=1;"), "{line}");
        assert!(line.contains("user-id=7 "), "{line}");
        assert!(line.ends_with(":hi id=x"), "{line}");
        let clear = "@room-id=1;target-user-id=5;tmi-sent-ts=2 :tmi.twitch.tv CLEARCHAT #x :u";
        assert_eq!(with_id_suffix(clear, "-s"), (clear.to_owned(), None));
    }

    #[test]
    fn schedule_follows_arrival_order_and_stops_at_the_limit() {
        let path = std::env::temp_dir().join(format!("cowatch-chat-{}.txt", std::process::id()));
        let line = |ts: u64, id: &str| format!("@id={id};tmi-sent-ts={ts} :u!u@u PRIVMSG #c :m");
        let text = [
            line(10_000, "a"),
            line(9_000, "b"), // earlier stamp, later arrival
            "@room-id=1 :tmi.twitch.tv ROOMSTATE #c".to_owned(),
            line(12_000, "c"),
            line(40_000, "d"),
        ]
        .join("\n");
        std::fs::write(&path, text).unwrap();
        let capture = Capture::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let at: Vec<u64> = capture.lines.iter().map(|l| l.at_ms).collect();
        assert_eq!(at, [0, 0, 0, 2_000, 30_000]);
        assert_eq!(capture.messages(), 4);

        let plan = Plan::new(&capture, 10.0, Duration::from_secs(1), 2);
        assert_eq!(plan.lines.len(), 4, "the line due at 3 s is past the limit");
        assert_eq!(plan.ids, ["a-r10-2", "b-r10-2", "c-r10-2"]);
        assert_eq!(plan.message_of, [Some(0), Some(1), None, Some(2)]);
        assert_eq!(plan.due[3], Duration::from_millis(200));
    }
}
