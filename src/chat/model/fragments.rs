//! A message's text cut into text and emote pieces, ready to render.

use super::{Emote, Fragment};

/// Cuts `text` at the emotes' code-point ranges. Ranges that overlap, run past the end or
/// are empty (Twitch has sent all three) are ignored and their text stays text.
pub fn fragments(text: &str, emotes: &[Emote]) -> Vec<Fragment> {
    let chars: Vec<char> = text.chars().collect();
    let mut sorted: Vec<&Emote> = emotes
        .iter()
        .filter(|e| e.start < e.end_exclusive && e.end_exclusive <= chars.len())
        .collect();
    sorted.sort_by_key(|e| e.start);
    let mut out = Vec::new();
    let mut at = 0;
    for e in sorted {
        if e.start < at {
            continue;
        }
        if e.start > at {
            out.push(Fragment::Text {
                text: chars[at..e.start].iter().collect(),
            });
        }
        out.push(Fragment::Emote {
            id: e.id.clone(),
            code: chars[e.start..e.end_exclusive].iter().collect(),
        });
        at = e.end_exclusive;
    }
    if at < chars.len() {
        out.push(Fragment::Text {
            text: chars[at..].iter().collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_emotes_stay_text() {
        let e = |start, end| Emote {
            id: "1".into(),
            start,
            end_exclusive: end,
            code: String::new(),
        };
        let f = fragments("hi", &[e(0, 9), e(1, 1)]);
        assert_eq!(f, vec![Fragment::Text { text: "hi".into() }]);
    }
}
