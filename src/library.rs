//! The media library behind `--library DIR`: the movies the streamer can pick for a watch party,
//! each with its duration and a thumbnail.
//!
//! [`Library::open`] lists the folder at once (so the dashboard can show the titles straight
//! away) and starts one background thread that probes the titles one by one: the duration with
//! GStreamer's `Discoverer`, then a thumbnail decoded from one frame, letterboxed with the
//! `image` crate and cached as PNG under `cache_dir`. Titles update in place as probing goes on;
//! a file that fails gets an [`Title::error`] and never stops the others.

use std::cmp::Ordering as CmpOrdering;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};

use gst_video::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_pbutils as gst_pbutils;
use gstreamer_pbutils::prelude::*;
use gstreamer_video as gst_video;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::gst_util::{self, PrerollError, clock_time};

/// File extensions (lower case) that count as movies.
pub const VIDEO_EXTENSIONS: &[&str] = &["mkv", "mp4", "m4v", "webm", "mov", "avi", "ts", "ogv"];

/// Size of every thumbnail: 16:9 like the party's canvas, small enough for a list.
pub const THUMBNAIL_SIZE: (u32, u32) = (320, 180);

/// How long the `Discoverer` may spend on one file before it counts as broken.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long decoding one thumbnail frame may take (preroll, seek and pull together).
const THUMBNAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The thumbnail frame is taken at this fraction of the duration…
const THUMBNAIL_AT_FRACTION: f64 = 0.10;

/// …but no later than this, so long movies do not need a far seek.
const THUMBNAIL_AT_MOST: Duration = Duration::from_secs(5);

/// The largest frame asked of GStreamer: enough for a good downscale by the `image` crate, while
/// a 4K frame is never copied whole.
const DECODE_MAX: (u32, u32) = (1280, 720);

/// Why the library cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The folder given with `--library` does not exist.
    #[error("media library {} (--library): no such directory", .0.display())]
    NotFound(PathBuf),
    /// `--library` names something that is not a folder.
    #[error("media library {} (--library): not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The folder exists but cannot be read.
    #[error("media library {} (--library): {source}", path.display())]
    Unreadable {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// GStreamer could not be initialised or the probing thread could not start.
    #[error("media library: {0}")]
    Setup(String),
}

/// One movie of the library, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Title {
    /// Stable short id: hex of a hash of the path relative to the library folder, so it survives
    /// restarts and rescans and reveals nothing of the file system.
    pub id: String,
    /// Display name: the file stem with `_` and `.` as spaces.
    pub name: String,
    /// Where the file is. Not sent to the host page: it plays titles by id.
    #[serde(skip)]
    pub path: PathBuf,
    /// File size, for the list and to notice a replaced file on rescan.
    pub size_bytes: u64,
    /// Length of the movie; `None` until probed, or when the container does not say.
    #[serde(rename = "duration_s", serialize_with = "seconds")]
    pub duration: Option<Duration>,
    /// Whether [`Library::thumbnail_png`] has a picture for this title.
    pub has_thumbnail: bool,
    /// Why the file cannot be played (one line); such titles are skipped by
    /// [`Library::next_after`].
    pub error: Option<String>,
    /// Whether the background probe has been through this title yet, so the page can tell
    /// "still working" from "no thumbnail".
    pub probed: bool,
}

/// Serialises a duration as seconds, like the rest of the web API (`duration_s`).
fn seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// What the background probe has done since the library was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProbeStats {
    /// Thumbnails decoded from the movie.
    pub thumbnails_decoded: u64,
    /// Thumbnails found in the cache instead.
    pub thumbnails_cached: u64,
    /// Titles that failed to probe.
    pub failed: u64,
}

/// The media library: a cheap-to-clone handle to the titles of one folder.
#[derive(Debug, Clone)]
pub struct Library {
    inner: Arc<Inner>,
}

/// State shared by the handles and the probing thread.
#[derive(Debug)]
struct Inner {
    /// The library folder, canonical.
    dir: PathBuf,
    /// Where thumbnails are cached; `None` when it cannot be created (thumbnails then live in
    /// memory only).
    cache_dir: Option<PathBuf>,
    /// The titles in list order. A std `RwLock`: readers are many (web handlers), writes are
    /// short, and nobody holds it across an `.await` or a decode.
    entries: RwLock<Vec<Entry>>,
    /// Which scan is current and whether its probe has finished; `done` wakes `wait_probed`.
    progress: Mutex<Progress>,
    /// Signalled when a probe finishes.
    done: Condvar,
    /// Counters behind [`ProbeStats`].
    decoded: AtomicU64,
    /// Counters behind [`ProbeStats`].
    cached: AtomicU64,
    /// Counters behind [`ProbeStats`].
    failed: AtomicU64,
}

/// One title plus what only the library needs about it.
#[derive(Debug, Clone)]
struct Entry {
    /// What callers see.
    title: Title,
    /// Modification time (seconds since the epoch): part of the cache key, so an edited file
    /// gets a new thumbnail.
    mtime: u64,
    /// Where the thumbnail is.
    thumbnail: Option<Thumbnail>,
}

/// Where a thumbnail's PNG is kept.
#[derive(Debug, Clone)]
enum Thumbnail {
    /// In the cache folder; read on demand so a large library costs no memory.
    File(PathBuf),
    /// In memory, when the cache folder is not writable.
    Memory(Arc<[u8]>),
}

/// Which scan's probe is current.
#[derive(Debug, Default)]
struct Progress {
    /// Bumped by every (re)scan; a probe thread of an older generation stops.
    generation: u64,
    /// The last generation whose probe went through every title.
    finished: Option<u64>,
}

/// What a probe thread needs to know about one title, copied out so no lock is held while it
/// decodes.
struct Job {
    /// The title's id.
    id: String,
    /// The file.
    path: PathBuf,
    /// The file's mtime, to check the entry is still the same file when the result comes back.
    mtime: u64,
}

/// The result of probing one title.
struct Outcome {
    /// From the discoverer.
    duration: Option<Duration>,
    /// The thumbnail, if one was made or found.
    thumbnail: Option<Thumbnail>,
    /// Why the title cannot be played.
    error: Option<String>,
}

impl Library {
    /// Lists the movies in `dir` (and one level of subfolders) and starts probing them in the
    /// background. Thumbnails are cached in `cache_dir`, which is created when missing.
    pub fn open(dir: &Path, cache_dir: &Path) -> Result<Library, LibraryError> {
        gst::init()
            .map_err(|e| LibraryError::Setup(format!("cannot initialise GStreamer: {e}")))?;
        let dir = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                dir.canonicalize()
                    .map_err(|source| LibraryError::Unreadable {
                        path: dir.to_path_buf(),
                        source,
                    })?
            }
            Ok(_) => return Err(LibraryError::NotADirectory(dir.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LibraryError::NotFound(dir.to_path_buf()));
            }
            Err(source) => {
                return Err(LibraryError::Unreadable {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let entries = list_videos(&dir)?;
        // A missing cache costs only speed, so it must not keep the party from starting.
        let cache_dir = match std::fs::create_dir_all(cache_dir) {
            Ok(()) => Some(cache_dir.to_path_buf()),
            Err(e) => {
                tracing::warn!(
                    cache = %cache_dir.display(),
                    error = %e,
                    "cannot create the thumbnail cache; thumbnails stay in memory"
                );
                None
            }
        };
        tracing::info!(dir = %dir.display(), titles = entries.len(), "media library opened");
        let library = Library {
            inner: Arc::new(Inner {
                dir,
                cache_dir,
                entries: RwLock::new(entries),
                progress: Mutex::new(Progress::default()),
                done: Condvar::new(),
                decoded: AtomicU64::new(0),
                cached: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        };
        library.start_probe()?;
        Ok(library)
    }

    /// The library folder (canonical).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// All titles in list order, as probed so far.
    pub fn titles(&self) -> Vec<Title> {
        self.inner.read().iter().map(|e| e.title.clone()).collect()
    }

    /// The title with this id.
    pub fn get(&self, id: &str) -> Option<Title> {
        self.inner.find(id, |e| e.title.clone())
    }

    /// The file of the title with this id, to hand to the pipeline.
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        self.inner.find(id, |e| e.title.path.clone())
    }

    /// The title's thumbnail as PNG (320×180), if it has one. Reads a small file from the cache;
    /// async callers may want `spawn_blocking`.
    pub fn thumbnail_png(&self, id: &str) -> Option<Vec<u8>> {
        match self.inner.find(id, |e| e.thumbnail.clone())?? {
            Thumbnail::Memory(png) => Some(png.to_vec()),
            Thumbnail::File(path) => match std::fs::read(&path) {
                Ok(png) => Some(png),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cached thumbnail unreadable");
                    None
                }
            },
        }
    }

    /// The next playable title after `id` in list order, wrapping around (for the "next"
    /// button). Titles with an error are skipped; `id` itself comes back when it is the only
    /// playable one. `None` when `id` is unknown or nothing is playable.
    pub fn next_after(&self, id: &str) -> Option<Title> {
        let entries = self.inner.read();
        let at = entries.iter().position(|e| e.title.id == id)?;
        (1..=entries.len())
            .map(|step| &entries[(at + step) % entries.len()].title)
            .find(|t| t.error.is_none())
            .cloned()
    }

    /// Waits until every title has been probed; `false` when `timeout` passed first.
    pub fn wait_probed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.inner.progress();
        loop {
            if progress.finished == Some(progress.generation) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            progress = self
                .inner
                .done
                .wait_timeout(progress, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// What the background probe has done so far.
    pub fn stats(&self) -> ProbeStats {
        ProbeStats {
            thumbnails_decoded: self.inner.decoded.load(Ordering::Relaxed),
            thumbnails_cached: self.inner.cached.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
        }
    }

    /// Lists the folder again: new files appear, removed ones go, and files that changed (size
    /// or mtime) are probed again; the others keep what was probed. Ids stay the same.
    pub fn rescan(&self) -> Result<(), LibraryError> {
        let mut fresh = list_videos(&self.inner.dir)?;
        {
            let mut entries = self.inner.write();
            for entry in &mut fresh {
                if let Some(old) = entries.iter().find(|old| {
                    old.title.id == entry.title.id
                        && old.mtime == entry.mtime
                        && old.title.size_bytes == entry.title.size_bytes
                }) {
                    *entry = old.clone();
                }
            }
            *entries = fresh;
        }
        self.start_probe()
    }

    /// Starts a new probe generation on one background thread; an older probe thread stops
    /// after its current title.
    fn start_probe(&self) -> Result<(), LibraryError> {
        let generation = {
            let mut progress = self.inner.progress();
            progress.generation += 1;
            progress.generation
        };
        // The thread holds only a weak reference, so dropping the last handle stops it.
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("library-probe".into())
            .spawn(move || probe_all(weak, generation))
            .map_err(|e| LibraryError::Setup(format!("cannot start the probing thread: {e}")))?;
        Ok(())
    }
}

impl Inner {
    /// Reads the entries; a poisoned lock still holds consistent data (writes are one
    /// assignment), so it is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the entries (see [`Inner::read`] about poisoning).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the probe progress.
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `f` to the entry with this id.
    fn find<T>(&self, id: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.read().iter().find(|e| e.title.id == id).map(f)
    }

    /// Whether `generation` is still the current scan.
    fn is_current(&self, generation: u64) -> bool {
        self.progress().generation == generation
    }

    /// The next title this probe should do, or `None` when all are probed.
    fn next_job(&self) -> Option<Job> {
        self.read().iter().find(|e| !e.title.probed).map(|e| Job {
            id: e.title.id.clone(),
            path: e.title.path.clone(),
            mtime: e.mtime,
        })
    }

    /// Stores what was found about a title, unless the file changed meanwhile (a rescan saw a
    /// new mtime, so the result describes an old file).
    fn record(&self, job: &Job, outcome: Outcome) {
        if outcome.error.is_some() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut entries = self.write();
        let Some(entry) = entries
            .iter_mut()
            // Unprobed only: should two files ever share an id, each still gets its turn
            // instead of the first one being recorded forever.
            .find(|e| e.title.id == job.id && e.mtime == job.mtime && !e.title.probed)
        else {
            return;
        };
        entry.title.duration = outcome.duration;
        entry.title.has_thumbnail = outcome.thumbnail.is_some();
        entry.thumbnail = outcome.thumbnail;
        entry.title.error = outcome.error;
        entry.title.probed = true;
    }

    /// Marks `generation`'s probe as finished, if it is still the current one.
    fn finish(&self, generation: u64) {
        let mut progress = self.progress();
        if progress.generation == generation {
            progress.finished = Some(generation);
            self.done.notify_all();
        }
    }
}

/// The probe thread: goes through the unprobed titles one by one until none is left, the scan
/// is superseded, or the library is dropped.
fn probe_all(weak: Weak<Inner>, generation: u64) {
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

/// What the discoverer tells about a movie.
struct Media {
    /// Its length, when the container says.
    duration: Option<Duration>,
    /// Whether a seek can be tried.
    seekable: bool,
    /// Display size of the first video stream (pixel aspect applied), when known.
    display_size: Option<(f64, f64)>,
}

/// Runs the discoverer on `uri`; the error is a short reason for the dashboard.
fn discover(discoverer: &gst_pbutils::Discoverer, uri: &str) -> Result<Media, String> {
    let info = discoverer
        .discover_uri(uri)
        .map_err(|e| format!("not a playable movie: {}", e.message()))?;
    match info.result() {
        gst_pbutils::DiscovererResult::Ok => {}
        gst_pbutils::DiscovererResult::Timeout => {
            return Err(format!(
                "not a playable movie: no answer within {} s",
                DISCOVER_TIMEOUT.as_secs()
            ));
        }
        gst_pbutils::DiscovererResult::MissingPlugins => {
            // Installer details read "gstreamer|1.0|app|H.265 (Main Profile) decoder|…".
            let what: Vec<String> = info
                .missing_elements_installer_details()
                .iter()
                .filter_map(|d| d.split('|').nth(3).map(str::to_owned))
                .collect();
            return Err(format!("GStreamer plugin missing: {}", what.join(", ")));
        }
        other => return Err(format!("not a playable movie ({other:?})")),
    }
    let video = info.video_streams();
    let Some(first) = video.first() else {
        return Err("not a movie: no video stream".into());
    };
    let par = first.par();
    let display_size =
        (first.width() > 0 && first.height() > 0 && par.numer() > 0 && par.denom() > 0).then(
            || {
                (
                    f64::from(first.width()) * f64::from(par.numer()) / f64::from(par.denom()),
                    f64::from(first.height()),
                )
            },
        );
    Ok(Media {
        duration: info.duration().map(|d| Duration::from_nanos(d.nseconds())),
        seekable: info.is_seekable(),
        display_size,
    })
}

/// Where the thumbnail frame is taken: 10 % into the movie, at most 5 s, 0 when unknown.
fn thumbnail_position(duration: Option<Duration>) -> Duration {
    duration.map_or(Duration::ZERO, |d| {
        d.mul_f64(THUMBNAIL_AT_FRACTION).min(THUMBNAIL_AT_MOST)
    })
}

/// Sets a pipeline to `Null` when dropped, so every return path releases the decoder.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Decodes one frame at `at`: uridecodebin → videoconvert → videoscale → RGB caps → appsink,
/// prerolled in `Paused`, then a key-unit seek and the new preroll sample.
fn decode_frame(uri: &str, media: &Media, at: Duration) -> Result<image::RgbImage, String> {
    let pipeline = gst::Pipeline::with_name("library-thumbnail");
    let guard = NullOnDrop(pipeline.clone());
    let decode = gst_util::make_with("uridecodebin", |b| b.property("uri", uri))
        .map_err(|e| e.to_string())?;
    let convert = gst_util::make("videoconvert").map_err(|e| e.to_string())?;
    // The size below keeps the aspect up to rounding; borders would show as thin lines.
    let scale = gst_util::make_with("videoscale", |b| b.property("add-borders", false))
        .map_err(|e| e.to_string())?;
    let filter =
        gst_util::capsfilter(&frame_caps(media.display_size)).map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .enable_last_sample(false)
        .build();
    pipeline
        .add_many([&decode, &convert, &scale, &filter, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([&convert, &scale, &filter, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    let pipeline_weak = pipeline.downgrade();
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(convert)) = (pipeline_weak.upgrade(), convert_weak.upgrade())
        else {
            return;
        };
        let Some(convert_pad) = convert.static_pad("sink") else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        // The first video stream makes the thumbnail.
        if is_video && !convert_pad.is_linked() {
            let _ = pad.link(&convert_pad);
            return;
        }
        // Audio and further streams go to a fakesink: left unlinked, a demuxer may stop with
        // not-linked. Not async, so it never holds up the preroll.
        if let Ok(fakesink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            && pipeline.add(&fakesink).is_ok()
        {
            let _ = fakesink.sync_state_with_parent();
            if let Some(sink_pad) = fakesink.static_pad("sink") {
                let _ = pad.link(&sink_pad);
            }
        }
    });

    let deadline = Instant::now() + THUMBNAIL_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    gst_util::preroll(&pipeline, left()).map_err(decode_error)?;
    if !at.is_zero() && media.seekable {
        // Key unit: the nearest keyframe is good enough for a thumbnail and needs no decoding
        // of the frames after it.
        let seeked = pipeline.seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
            clock_time(at),
        );
        if seeked.is_ok() {
            gst_util::wait_async_done(&pipeline, left()).map_err(decode_error)?;
        }
    }
    let sample = sink
        .try_pull_preroll(clock_time(left()))
        .ok_or_else(|| "no frame decoded".to_string())?;
    let frame = sample_to_rgb(&sample)?;
    drop(guard);
    Ok(frame)
}

/// RGB caps for the decoded frame: the source's display aspect, fitted into [`DECODE_MAX`],
/// square pixels. Without a known size the ranges let `videoscale` keep the aspect itself.
fn frame_caps(display_size: Option<(f64, f64)>) -> gst::Caps {
    let builder = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    match display_size {
        Some((w, h)) => {
            let (w, h) = fit((w, h), DECODE_MAX);
            builder.field("width", w as i32).field("height", h as i32)
        }
        None => builder
            .field("width", gst::IntRange::new(1, DECODE_MAX.0 as i32))
            .field("height", gst::IntRange::new(1, DECODE_MAX.1 as i32)),
    }
    .build()
}

/// The largest size with the aspect of `size` that fits `bounds`, never upscaled, at least 1×1.
fn fit(size: (f64, f64), bounds: (u32, u32)) -> (u32, u32) {
    let (w, h) = size;
    let scale = (f64::from(bounds.0) / w)
        .min(f64::from(bounds.1) / h)
        .min(1.0);
    let w = ((w * scale).round() as u32).clamp(1, bounds.0);
    let h = ((h * scale).round() as u32).clamp(1, bounds.1);
    (w, h)
}

/// Why decoding the thumbnail frame stopped, in the dashboard's words.
fn decode_error(e: PrerollError) -> String {
    match e {
        PrerollError::Failed(message) => message,
        PrerollError::Refused => "cannot start decoding".into(),
        PrerollError::TimedOut(_) => format!("no frame within {} s", THUMBNAIL_TIMEOUT.as_secs()),
    }
}

/// Copies an RGB sample into an image, row by row (GStreamer pads rows to 4 bytes).
fn sample_to_rgb(sample: &gst::Sample) -> Result<image::RgbImage, String> {
    let caps = sample.caps().ok_or("frame without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let buffer = sample.buffer().ok_or("frame without data")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| e.to_string())?;
    let stride = usize::try_from(frame.plane_stride()[0]).map_err(|e| e.to_string())?;
    let data = frame.plane_data(0).map_err(|e| e.to_string())?;
    let (width, height) = (info.width(), info.height());
    let row = width as usize * 3;
    let mut pixels = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let line = data
            .get(y * stride..y * stride + row)
            .ok_or("frame shorter than its caps")?;
        pixels.extend_from_slice(line);
    }
    image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| "bad frame size".into())
}

/// Scales `frame` to fit [`THUMBNAIL_SIZE`], centred on black: every thumbnail has the same
/// size, so the page's grid stays even whatever the movie's aspect.
fn letterbox(frame: &image::RgbImage) -> image::RgbImage {
    let (tw, th) = THUMBNAIL_SIZE;
    let (w, h) = (
        f64::from(frame.width().max(1)),
        f64::from(frame.height().max(1)),
    );
    // Up or down: a small movie still fills the box.
    let scale = (f64::from(tw) / w).min(f64::from(th) / h);
    let nw = ((w * scale).round() as u32).clamp(1, tw);
    let nh = ((h * scale).round() as u32).clamp(1, th);
    // Triangle filters over the whole footprint, so a large downscale does not alias.
    let resized = image::imageops::resize(frame, nw, nh, image::imageops::FilterType::Triangle);
    let mut canvas = image::RgbImage::new(tw, th);
    image::imageops::replace(
        &mut canvas,
        &resized,
        i64::from((tw - nw) / 2),
        i64::from((th - nh) / 2),
    );
    canvas
}

/// Encodes a picture as PNG.
fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(png)
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

/// Lists the movies in `dir` and its direct subfolders, sorted by display name.
fn list_videos(dir: &Path) -> Result<Vec<Entry>, LibraryError> {
    let top = std::fs::read_dir(dir).map_err(|source| LibraryError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    for item in top.flatten() {
        let name = item.file_name();
        if is_hidden(&name) {
            continue;
        }
        // `metadata` follows symlinks, so linked movies and folders count.
        let Ok(meta) = std::fs::metadata(item.path()) else {
            continue;
        };
        if meta.is_dir() {
            let sub = match std::fs::read_dir(item.path()) {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(dir = %item.path().display(), error = %e, "library subfolder unreadable");
                    continue;
                }
            };
            for inner in sub.flatten() {
                let inner_name = inner.file_name();
                if is_hidden(&inner_name) {
                    continue;
                }
                if let Ok(meta) = std::fs::metadata(inner.path())
                    && meta.is_file()
                    && is_video(&inner_name)
                {
                    let relative = Path::new(&name).join(&inner_name);
                    entries.push(entry(dir, &relative, &meta));
                }
            }
        } else if meta.is_file() && is_video(&name) {
            entries.push(entry(dir, Path::new(&name), &meta));
        }
    }
    entries.sort_by(|a, b| {
        natural_cmp(&a.title.name, &b.title.name).then_with(|| a.title.path.cmp(&b.title.path))
    });
    Ok(entries)
}

/// A not yet probed entry for the file at `relative` under `dir`.
fn entry(dir: &Path, relative: &Path, meta: &std::fs::Metadata) -> Entry {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Entry {
        title: Title {
            id: title_id(relative),
            name: display_name(relative),
            path: dir.join(relative),
            size_bytes: meta.len(),
            duration: None,
            has_thumbnail: false,
            error: None,
            probed: false,
        },
        mtime,
        thumbnail: None,
    }
}

/// Whether a file name is hidden (dot files, including macOS `._` companions).
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// Whether a file name has one of the [`VIDEO_EXTENSIONS`], in any case.
fn is_video(name: &OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| VIDEO_EXTENSIONS.iter().any(|v| ext.eq_ignore_ascii_case(v)))
}

/// The title's id: 12 hex digits of SHA-256 over the relative path with `/` separators. SHA-256
/// rather than `DefaultHasher`, whose output may change between Rust releases, and ids are kept
/// in thumbnail file names and maybe in the host's browser.
fn title_id(relative: &Path) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in relative.iter().enumerate() {
        if i > 0 {
            hasher.update(b"/");
        }
        hasher.update(part.as_encoded_bytes());
    }
    hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The display name: the file stem with `_` and `.` as spaces, runs of spaces collapsed; the
/// file name itself when that leaves nothing.
fn display_name(relative: &Path) -> String {
    let stem = relative
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let name = stem
        .replace(['_', '.'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        relative
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    }
}

/// Compares names case-insensitively with digit runs as numbers, so "Episode 2" comes before
/// "Episode 10".
fn natural_cmp(a: &str, b: &str) -> CmpOrdering {
    let mut a = a.chars().peekable();
    let mut b = b.chars().peekable();
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return CmpOrdering::Equal,
            (None, Some(_)) => return CmpOrdering::Less,
            (Some(_), None) => return CmpOrdering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = digits(&mut a);
                let db = digits(&mut b);
                let (ta, tb) = (da.trim_start_matches('0'), db.trim_start_matches('0'));
                let order = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| da.len().cmp(&db.len()));
                if order != CmpOrdering::Equal {
                    return order;
                }
            }
            (Some(x), Some(y)) => {
                let order = x.to_lowercase().cmp(y.to_lowercase());
                if order != CmpOrdering::Equal {
                    return order;
                }
                a.next();
                b.next();
            }
        }
    }
}

/// Takes the run of ASCII digits at the front of `chars`.
fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut run = String::new();
    while let Some(c) = chars.next_if(char::is_ascii_digit) {
        run.push(c);
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_replace_underscores_and_dots() {
        assert_eq!(
            display_name(Path::new("The_Big.Movie.mkv")),
            "The Big Movie"
        );
        assert_eq!(display_name(Path::new("extras/ a__b _.MP4")), "a b");
        assert_eq!(display_name(Path::new("plain.webm")), "plain");
        // Nothing left after the replacement: the file name is better than an empty row.
        assert_eq!(display_name(Path::new("_.mkv")), "_.mkv");
    }

    #[test]
    fn ids_are_stable_short_and_distinct() {
        let a = title_id(Path::new("movie.mkv"));
        assert_eq!(a, title_id(Path::new("movie.mkv")));
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, title_id(Path::new("other.mkv")));
        assert_ne!(a, title_id(Path::new("extras/movie.mkv")));
        // Pinned: the id is a cache key and may be remembered by the host page, so a change of
        // hashing would be a visible break.
        assert_eq!(title_id(Path::new("extras/movie.mkv")), {
            let d = Sha256::digest(b"extras/movie.mkv");
            d[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
    }

    #[test]
    fn video_extensions_any_case_and_hidden_files() {
        assert!(is_video(OsStr::new("a.MKV")));
        assert!(is_video(OsStr::new("a.b.Mp4")));
        assert!(is_video(OsStr::new("clip.ts")));
        assert!(!is_video(OsStr::new("notes.txt")));
        assert!(!is_video(OsStr::new("mkv")));
        assert!(is_hidden(OsStr::new(".secret.mkv")));
        assert!(is_hidden(OsStr::new("._movie.mkv")));
        assert!(!is_hidden(OsStr::new("movie.mkv")));
    }

    #[test]
    fn natural_order_counts_numbers() {
        let mut names = vec![
            "Episode 10",
            "episode 2",
            "Episode 1",
            "Alpha",
            "beta",
            "Ep 02",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "Alpha",
                "beta",
                "Ep 02",
                "Episode 1",
                "episode 2",
                "Episode 10"
            ]
        );
    }

    #[test]
    fn listing_takes_one_level_of_subfolders_sorted() {
        let dir = std::env::temp_dir().join(format!("cowatch-unit-library-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for file in [
            "b_movie.mkv",
            "A.Movie.MP4",
            "notes.txt",
            ".hidden.mkv",
            "season/ep_10.mkv",
            "season/ep_2.webm",
            ".trash/gone.mkv",
            "season/deeper/too_deep.mkv",
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        let names: Vec<String> = list_videos(&dir)
            .unwrap()
            .into_iter()
            .map(|e| e.title.name)
            .collect();
        assert_eq!(names, ["A Movie", "b movie", "ep 2", "ep 10"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn letterbox_keeps_aspect_on_black() {
        // A tall white frame: bars left and right, picture in the middle.
        let tall = image::RgbImage::from_pixel(100, 200, image::Rgb([255, 255, 255]));
        let thumb = letterbox(&tall);
        assert_eq!(thumb.dimensions(), THUMBNAIL_SIZE);
        assert_eq!(thumb.get_pixel(160, 90).0, [255, 255, 255]);
        assert_eq!(thumb.get_pixel(5, 90).0, [0, 0, 0]);
        assert_eq!(thumb.get_pixel(314, 90).0, [0, 0, 0]);
        // 16:9 fills the box exactly.
        let wide = image::RgbImage::from_pixel(1280, 720, image::Rgb([10, 200, 30]));
        let thumb = letterbox(&wide);
        assert_eq!(thumb.get_pixel(0, 0).0, [10, 200, 30]);
        assert_eq!(thumb.get_pixel(319, 179).0, [10, 200, 30]);
    }

    #[test]
    fn thumbnail_position_is_a_tenth_at_most_five_seconds() {
        assert_eq!(thumbnail_position(None), Duration::ZERO);
        assert_eq!(
            thumbnail_position(Some(Duration::from_secs(20))),
            Duration::from_secs(2)
        );
        assert_eq!(
            thumbnail_position(Some(Duration::from_secs(7200))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit((3840.0, 2160.0), DECODE_MAX), (1280, 720));
        assert_eq!(fit((640.0, 480.0), DECODE_MAX), (640, 480));
        assert_eq!(fit((1000.0, 2000.0), DECODE_MAX), (360, 720));
    }
}
