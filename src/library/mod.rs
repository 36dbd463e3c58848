//! The media library behind `--library DIR`: the movies the streamer can pick for a watch party,
//! each with its duration and a thumbnail.
//!
//! [`Library::open`] lists the folder at once (so the dashboard can show the titles straight
//! away) and starts one background thread that probes the titles one by one: the duration with
//! GStreamer's `Discoverer`, then a thumbnail decoded from one frame, letterboxed with the
//! `image` crate and cached as PNG under `cache_dir`. Titles update in place as probing goes on;
//! a file that fails gets an [`Title::error`] and never stops the others.
//!
//! - `listing`: which files of the folder are movies, their ids, names and order.
//! - `probe`: the background thread that goes through the titles.
//! - `thumbnail`: GStreamer's view of one file: its length, and one frame made a picture.

mod listing;
mod probe;
mod thumbnail;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use gstreamer as gst;
use serde::Serialize;

use crate::util::lock::{Locked, RwLocked};
use listing::list_videos;
use probe::{Job, Outcome, probe_all};

/// File extensions (lower case) that count as movies.
pub const VIDEO_EXTENSIONS: &[&str] = &["mkv", "mp4", "m4v", "webm", "mov", "avi", "ts", "ogv"];

/// Size of every thumbnail: 16:9 like the party's canvas, small enough for a list.
pub const THUMBNAIL_SIZE: (u32, u32) = (320, 180);

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

    /// What "next" plays after title `after`: the next playable one, or the first playable
    /// title when nothing from the library plays yet (or `after` is gone).
    pub fn next_playable(&self, after: Option<&str>) -> Option<Title> {
        after
            .and_then(|id| self.next_after(id))
            .or_else(|| self.titles().into_iter().find(|t| t.error.is_none()))
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
        self.entries.read_locked()
    }

    /// Writes the entries (see [`Inner::read`] about poisoning).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries.write_locked()
    }

    /// Locks the probe progress.
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.locked()
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
