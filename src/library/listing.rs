//! Which files of the library folder are movies, and how they are named, identified and
//! ordered.

use std::cmp::Ordering as CmpOrdering;
use std::ffi::OsStr;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::{Entry, LibraryError, Title, VIDEO_EXTENSIONS};

/// Lists the movies in `dir` and its direct subfolders, sorted by display name.
pub(super) fn list_videos(dir: &Path) -> Result<Vec<Entry>, LibraryError> {
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
}
