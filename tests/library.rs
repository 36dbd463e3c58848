//! The media library against real files: movies made on the spot, a broken one, and a text
//! file; durations and thumbnails checked by decoding what the library produced.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{MOVIE_BLUE, MOVIE_RED, WEBCAM_GREEN};
use cowatch::library::{Library, LibraryError, Title};

/// Generous: each title is discovered and decoded one after the other, and tests run in
/// parallel with other GStreamer tests.
const PROBE_TIMEOUT: Duration = Duration::from_secs(90);

/// Writes `len` bytes of deterministic noise (xorshift), so the broken file is the same on
/// every run and cannot by chance look like a movie one day and not the next.
fn write_noise(path: &Path, len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

/// The decoded thumbnail of `title`, checked for size.
fn thumbnail(library: &Library, title: &Title) -> image::RgbImage {
    let png = library
        .thumbnail_png(&title.id)
        .unwrap_or_else(|| panic!("{} has no thumbnail: {title:?}", title.name));
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{}'s thumbnail is not a PNG: {e}", title.name))
        .to_rgb8();
    assert!(
        img.width() <= 320 && img.height() <= 180,
        "{}'s thumbnail is {}x{}",
        title.name,
        img.width(),
        img.height()
    );
    img
}

/// Checks the centre of `title`'s thumbnail against the colour its movie was made with.
fn assert_centre(library: &Library, title: &Title, expected: [u8; 3]) {
    let img = thumbnail(library, title);
    let got = common::colour_at(&img, img.width() as i32 / 2, img.height() as i32 / 2);
    assert!(
        got.iter().zip(expected).all(|(a, b)| a.abs_diff(b) <= 40),
        "{}'s thumbnail centre is {got:?}, expected about {expected:?}",
        title.name
    );
}

/// Checks a probed duration against what was made.
fn assert_duration(title: &Title, seconds: f64) {
    let got = title
        .duration
        .unwrap_or_else(|| panic!("{} has no duration: {title:?}", title.name))
        .as_secs_f64();
    assert!(
        (got - seconds).abs() <= 0.3,
        "{} lasts {got:.3} s, made {seconds} s",
        title.name
    );
}

/// The thumbnail files in the cache.
fn cached_pngs(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
}

#[test]
fn lists_probes_and_thumbnails_the_movies() {
    let root = common::scratch("library-probe");
    let dir = root.join("movies");
    let cache = root.join("cache");
    std::fs::create_dir_all(dir.join("extras/deeper")).unwrap();
    common::make_movie(&dir.join("alpha_red.mkv"), MOVIE_RED, 2);
    // Upper-case extension: the listing ignores case.
    common::make_movie(&dir.join("Blue.Movie.MKV"), MOVIE_BLUE, 3);
    common::make_movie(&dir.join("extras/green_clip.mkv"), WEBCAM_GREEN, 2);
    write_noise(&dir.join("broken.mkv"), 64 * 1024);
    std::fs::write(dir.join("notes.txt"), "not a movie").unwrap();
    // Hidden files and anything two levels down are not part of the library.
    write_noise(&dir.join(".hidden.mkv"), 1024);
    write_noise(&dir.join("extras/deeper/too_deep.mkv"), 1024);

    let library = Library::open(&dir, &cache).unwrap();
    // Listed at once, before any probing result.
    let names: Vec<String> = library.titles().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["alpha red", "Blue Movie", "broken", "green clip"]);
    assert!(
        library.wait_probed(PROBE_TIMEOUT),
        "not probed in time: {:?}",
        library.titles()
    );

    let titles = library.titles();
    let [red, blue, broken, green] = &titles[..] else {
        panic!("expected 4 titles, got {titles:?}");
    };
    for (title, colour, seconds) in [
        (red, MOVIE_RED, 2.0),
        (blue, MOVIE_BLUE, 3.0),
        (green, WEBCAM_GREEN, 2.0),
    ] {
        assert!(title.probed, "{title:?}");
        assert_eq!(title.error, None, "{title:?}");
        assert!(title.has_thumbnail, "{title:?}");
        assert!(title.size_bytes > 0);
        assert_duration(title, seconds);
        assert_centre(&library, title, colour);
    }
    assert!(broken.probed);
    let error = broken.error.as_deref().expect("broken.mkv has an error");
    assert!(!error.contains('\n'), "error is one line: {error:?}");
    assert!(!broken.has_thumbnail);
    assert_eq!(library.thumbnail_png(&broken.id), None);

    // Lookups by id.
    assert_eq!(library.get(&blue.id).as_ref(), Some(blue));
    assert_eq!(
        library.path_of(&green.id),
        Some(dir.canonicalize().unwrap().join("extras/green_clip.mkv"))
    );
    assert_eq!(library.get("nope"), None);
    assert_eq!(library.path_of("../../etc/passwd"), None);

    // "Next" skips the broken title and wraps around.
    let next = |t: &Title| library.next_after(&t.id).map(|t| t.name);
    assert_eq!(next(red).as_deref(), Some("Blue Movie"));
    assert_eq!(next(blue).as_deref(), Some("green clip"));
    assert_eq!(next(green).as_deref(), Some("alpha red"));
    assert_eq!(next(broken).as_deref(), Some("green clip"));
    assert_eq!(library.next_after("nope"), None);

    // What the host page receives: ids and names, no file system paths.
    let json = serde_json::to_value(&titles).unwrap();
    let text = json.to_string();
    assert!(!text.contains(root.to_str().unwrap()), "{text}");
    assert!(json[0].get("path").is_none(), "{text}");
    let secs = json[1]["duration_s"].as_f64().unwrap();
    assert!((secs - 3.0).abs() <= 0.3, "{text}");

    let stats = library.stats();
    assert_eq!(
        (stats.thumbnails_decoded, stats.failed),
        (3, 1),
        "{stats:?}"
    );
    assert_eq!(cached_pngs(&cache).len(), 3);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn reopening_reuses_cached_thumbnails() {
    let root = common::scratch("library-cache");
    let dir = root.join("movies");
    let cache = root.join("cache");
    std::fs::create_dir_all(&dir).unwrap();
    common::make_movie(&dir.join("red.mkv"), MOVIE_RED, 2);

    let first = Library::open(&dir, &cache).unwrap();
    assert!(first.wait_probed(PROBE_TIMEOUT), "{:?}", first.titles());
    assert_eq!(first.stats().thumbnails_decoded, 1);
    let png = first.thumbnail_png(&first.titles()[0].id).unwrap();
    let files = cached_pngs(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let written: SystemTime = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    drop(first);

    let again = Library::open(&dir, &cache).unwrap();
    assert!(again.wait_probed(PROBE_TIMEOUT), "{:?}", again.titles());
    let stats = again.stats();
    assert_eq!(
        (stats.thumbnails_decoded, stats.thumbnails_cached),
        (0, 1),
        "{stats:?}"
    );
    let title = &again.titles()[0];
    assert!(title.has_thumbnail);
    assert_duration(title, 2.0);
    assert_eq!(again.thumbnail_png(&title.id).unwrap(), png);
    assert_eq!(cached_pngs(&cache), files);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written,
        "the cached thumbnail was written again"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn rescan_finds_new_files_and_keeps_probed_ones() {
    let root = common::scratch("library-rescan");
    let dir = root.join("movies");
    std::fs::create_dir_all(&dir).unwrap();
    common::make_movie(&dir.join("one.mkv"), MOVIE_RED, 2);
    let library = Library::open(&dir, &root.join("cache")).unwrap();
    assert!(library.wait_probed(PROBE_TIMEOUT));
    let one = library.titles()[0].clone();

    common::make_movie(&dir.join("two.mkv"), MOVIE_BLUE, 2);
    library.rescan().unwrap();
    assert!(library.wait_probed(PROBE_TIMEOUT), "{:?}", library.titles());
    let titles = library.titles();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert_eq!(titles[0], one, "an unchanged title keeps its id and probe");
    assert_eq!(titles[1].name, "two");
    assert!(titles[1].has_thumbnail, "{titles:?}");
    // One decode per file: the rescan did not redo the first.
    assert_eq!(library.stats().thumbnails_decoded, 2);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_empty_folder_is_an_empty_library() {
    let root = common::scratch("library-empty");
    let library = Library::open(&root, &root.join("cache")).unwrap();
    assert!(library.wait_probed(Duration::from_secs(5)));
    assert!(library.titles().is_empty());
    assert_eq!(library.next_after("anything"), None);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let root = common::scratch("library-missing");
    let missing = root.join("no-such-folder");
    let err = Library::open(&missing, &root.join("cache")).unwrap_err();
    assert!(matches!(err, LibraryError::NotFound(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "media library {} (--library): no such directory",
            missing.display()
        )
    );

    let file = root.join("file.mkv");
    std::fs::write(&file, b"x").unwrap();
    let err = Library::open(&file, &root.join("cache")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "media library {} (--library): not a directory",
            file.display()
        )
    );
    let _ = std::fs::remove_dir_all(&root);
}
