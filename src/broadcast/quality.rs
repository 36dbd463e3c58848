//! What a viewer may be sent: *Auto* (the bandwidth estimate picks), or a cap it chose.

use std::fmt;
use std::str::FromStr;

/// A viewer's choice in the page's quality menu. A cap bounds what Auto may pick: a viewer on
/// `360p` never gets more, and gets less when its link cannot carry even that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    /// The highest rendition the link carries.
    #[default]
    Auto,
    /// At most this many lines (`360p` is `Max(360)`).
    Max(u32),
}

impl Quality {
    /// Whether a rendition `height` lines tall is allowed.
    pub fn allows(self, height: u32) -> bool {
        match self {
            Quality::Auto => true,
            Quality::Max(max) => height <= max,
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Auto => f.write_str("auto"),
            Quality::Max(h) => write!(f, "{h}p"),
        }
    }
}

/// Why a quality text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quality `{0}`: expected auto or a height such as 720p or 360p")]
pub struct BadQuality(pub String);

impl FromStr for Quality {
    type Err = BadQuality;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Quality::Auto);
        }
        let shown: String = text.chars().take(16).collect();
        text.strip_suffix(['p', 'P'])
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|h| (1..=8192).contains(h))
            .map(Quality::Max)
            .ok_or(BadQuality(shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_menu_sends_and_refuses_the_rest() {
        assert_eq!("auto".parse(), Ok(Quality::Auto));
        assert_eq!(" 360p ".parse(), Ok(Quality::Max(360)));
        assert_eq!("720P".parse(), Ok(Quality::Max(720)));
        for bad in ["", "p", "hd", "0p", "-360p", "360", "99999p"] {
            assert!(bad.parse::<Quality>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Quality::Max(360).to_string(), "360p");
        assert!(Quality::Max(360).allows(360) && !Quality::Max(360).allows(720));
        assert!(Quality::Auto.allows(1080));
    }
}
