//! Emote pictures for the chat panel, from the streamer's directory of `<emote id>.png` files:
//! read from disk on first use, scaled to the line height and kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::lock::Locked;
use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits, RgbaImage};

/// Where emote pictures are looked for by default, relative to the working directory like
/// `pipelines/` (emotes are the streamer's files, so they cannot be embedded as the font is).
pub const DEFAULT_EMOTE_DIR: &str = "overlay/emotes";

/// Emote pictures from a directory of `<emote id>.png` files, decoded on first use and kept,
/// already scaled to the line height.
///
/// Nothing is downloaded: the streamer drops files in the directory (see its README), and an
/// emote without a file is drawn as its code. A miss is remembered for a minute, so a file
/// added during the party shows up without re-reading the disk on every render.
pub struct EmoteCache {
    /// The directory of `<id>.png` files.
    dir: PathBuf,
    /// By emote id. A std mutex: only the renderer's blocking thread uses it, briefly.
    entries: Mutex<HashMap<String, CachedEmote>>,
}

/// What the cache knows of one emote id.
struct CachedEmote {
    /// The picture at the height it was last asked for; `None` when there is no usable file.
    image: Option<Arc<RgbaImage>>,
    /// When the file was looked for, so misses are retried now and then.
    checked: Instant,
}

impl EmoteCache {
    /// How long a missing emote file stays missing before the directory is looked at again.
    const MISS_RETRY: Duration = Duration::from_secs(60);
    /// Emotes kept; past this the cache starts over, which bounds memory on a channel that
    /// sees thousands of different emotes in a long stream.
    const MAX_ENTRIES: usize = 4096;
    /// Emote pictures larger than this are refused rather than decoded (Twitch's largest
    /// size is 112 px; this leaves room for anything sensible).
    const MAX_SIDE: u32 = 1024;

    /// A cache over the `<id>.png` files of `dir`; the directory need not exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmoteCache {
            dir: dir.into(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The picture of emote `id` scaled to `height` pixels (keeping its aspect ratio, at most
    /// four times as wide as high), or `None` when there is no usable file for it.
    pub fn get(&self, id: &str, height: u32) -> Option<Arc<RgbaImage>> {
        if height == 0 || !valid_id(id) {
            return None;
        }
        // A panic elsewhere cannot leave a half-written entry that matters: use it as is.
        let mut entries = self.entries.locked();
        if let Some(entry) = entries.get(id) {
            match &entry.image {
                Some(image) if image.height() == height => return Some(image.clone()),
                None if entry.checked.elapsed() < Self::MISS_RETRY => return None,
                _ => {}
            }
        }
        let image = self.load(id, height).map(Arc::new);
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            id.to_owned(),
            CachedEmote {
                image: image.clone(),
                checked: Instant::now(),
            },
        );
        image
    }

    /// Reads and scales `<dir>/<id>.png`.
    fn load(&self, id: &str, height: u32) -> Option<RgbaImage> {
        let path = self.dir.join(format!("{id}.png"));
        if !path.is_file() {
            return None;
        }
        let decoded = ImageReader::open(&path)
            .map_err(image::ImageError::IoError)
            .and_then(|mut reader| {
                reader.set_format(ImageFormat::Png);
                let mut limits = Limits::default();
                limits.max_image_width = Some(Self::MAX_SIDE);
                limits.max_image_height = Some(Self::MAX_SIDE);
                reader.limits(limits);
                reader.decode()
            });
        let picture = match decoded {
            Ok(picture) => picture.to_rgba8(),
            Err(error) => {
                // Once a minute at most, thanks to the miss cache.
                tracing::warn!(path = %path.display(), %error, "unusable emote picture");
                return None;
            }
        };
        if picture.width() == 0 || picture.height() == 0 {
            return None;
        }
        let width = (f64::from(picture.width()) * f64::from(height) / f64::from(picture.height()))
            .round()
            .clamp(1.0, f64::from(height) * 4.0) as u32;
        Some(image::imageops::resize(
            &picture,
            width,
            height,
            FilterType::Triangle,
        ))
    }
}

/// Reads from [`DEFAULT_EMOTE_DIR`].
impl Default for EmoteCache {
    fn default() -> Self {
        EmoteCache::new(DEFAULT_EMOTE_DIR)
    }
}

/// Twitch emote ids are digits or `emotesv2_` and hex; anything else (a path, a dot) never
/// reaches the file system.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twitch_like_ids_reach_the_disk() {
        for id in ["25", "emotesv2_1b2c3d", "a-b"] {
            assert!(valid_id(id), "{id}");
        }
        for id in ["", "../25", "25.png", "/etc/passwd", &"9".repeat(129)] {
            assert!(!valid_id(id), "{id}");
        }
        let cache = EmoteCache::new("/nonexistent/cowatch-emotes");
        assert!(cache.get("25", 0).is_none());
        assert!(cache.get("25", 18).is_none());
        assert_eq!(cache.dir(), Path::new("/nonexistent/cowatch-emotes"));
    }
}
