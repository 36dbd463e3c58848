//! The probe thread: one title at a time, the duration from the discoverer, then a thumbnail
//! from the cache or decoded, recorded in the library as it goes.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_pbutils as gst_pbutils;

use super::thumbnail::{
    DISCOVER_TIMEOUT, decode_frame, discover, encode_png, letterbox, thumbnail_position,
};
use super::{Inner, Thumbnail};
use crate::gst_util::clock_time;

/// What a probe thread needs to know about one title, copied out so no lock is held while it
/// decodes.
pub(super) struct Job {
    /// The title's id.
    pub(super) id: String,
    /// The file.
    pub(super) path: PathBuf,
    /// The file's mtime, to check the entry is still the same file when the result comes back.
    pub(super) mtime: u64,
}

/// The result of probing one title.
pub(super) struct Outcome {
    /// From the discoverer.
    pub(super) duration: Option<Duration>,
    /// The thumbnail, if one was made or found.
    pub(super) thumbnail: Option<Thumbnail>,
    /// Why the title cannot be played.
    pub(super) error: Option<String>,
}

/// The probe thread: goes through the unprobed titles one by one until none is left, the scan
/// is superseded, or the library is dropped.
pub(super) fn probe_all(weak: Weak<Inner>, generation: u64) {
    let discoverer = gst_pbutils::Discoverer::new(clock_time(DISCOVER_TIMEOUT))
        .map_err(|e| one_line(&format!("GStreamer discoverer unavailable: {e}")));
    loop {
        // Hold the library only between titles, never while decoding.
        let (job, cache_dir) = {
            let Some(inner) = weak.upgrade() else { return };
            if !inner.is_current(generation) {
                return;
            }
            let Some(job) = inner.next_job() else {
                inner.finish(generation);
                return;
            };
            (job, inner.cache_dir.clone())
        };
        let started = Instant::now();
        let (outcome, decoded) = match &discoverer {
            Ok(discoverer) => probe_one(discoverer, &job, cache_dir.as_deref()),
            Err(e) => (
                Outcome {
                    duration: None,
                    thumbnail: None,
                    error: Some(e.clone()),
                },
                false,
            ),
        };
        tracing::debug!(
            path = %job.path.display(),
            duration = ?outcome.duration,
            thumbnail = outcome.thumbnail.is_some(),
            error = outcome.error.as_deref(),
            took_ms = started.elapsed().as_millis() as u64,
            "library title probed"
        );
        if let Some(e) = &outcome.error {
            tracing::warn!(path = %job.path.display(), error = %e, "library title cannot be played");
        }
        let Some(inner) = weak.upgrade() else { return };
        match (&outcome.thumbnail, decoded) {
            (Some(_), true) => inner.decoded.fetch_add(1, Ordering::Relaxed),
            (Some(_), false) => inner.cached.fetch_add(1, Ordering::Relaxed),
            (None, _) => 0,
        };
        inner.record(&job, outcome);
    }
}

/// Probes one title: duration, then a thumbnail from the cache or decoded. The flag says whether
/// the thumbnail was decoded (rather than found in the cache).
fn probe_one(
    discoverer: &gst_pbutils::Discoverer,
    job: &Job,
    cache_dir: Option<&Path>,
) -> (Outcome, bool) {
    let fail = |error: String| {
        (
            Outcome {
                duration: None,
                thumbnail: None,
                error: Some(one_line(&error)),
            },
            false,
        )
    };
    let uri = match gst::glib::filename_to_uri(&job.path, None) {
        Ok(uri) => uri,
        Err(e) => return fail(format!("cannot make a URI of the path: {e}")),
    };
    let media = match discover(discoverer, &uri) {
        Ok(media) => media,
        Err(e) => return fail(e),
    };
    let cached = cache_dir.map(|dir| dir.join(format!("{}-{}.png", job.id, job.mtime)));
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        let outcome = Outcome {
            duration: media.duration,
            thumbnail: Some(Thumbnail::File(path.clone())),
            error: None,
        };
        return (outcome, false);
    }
    let at = thumbnail_position(media.duration);
    let png = match decode_frame(&uri, &media, at).and_then(|frame| encode_png(&letterbox(&frame)))
    {
        Ok(png) => png,
        Err(e) => {
            return (
                Outcome {
                    duration: media.duration,
                    thumbnail: None,
                    error: Some(one_line(&format!("cannot decode a frame: {e}"))),
                },
                false,
            );
        }
    };
    let thumbnail = match cached.as_deref().map(|path| write_atomically(path, &png)) {
        Some(Ok(path)) => Thumbnail::File(path),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot cache a thumbnail; keeping it in memory");
            Thumbnail::Memory(png.into())
        }
        None => Thumbnail::Memory(png.into()),
    };
    let outcome = Outcome {
        duration: media.duration,
        thumbnail: Some(thumbnail),
        error: None,
    };
    (outcome, true)
}

/// Writes `data` to `path` through a temporary file and a rename, so a crash never leaves a
/// truncated PNG that later runs would trust.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
    /// Tells apart the temporary files of concurrent writers in this process.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(path.to_path_buf())
}

/// Squeezes an error onto one line for the dashboard.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
