//! Where a layout chosen while live may come from, and how its file is read.
//!
//! The host's dashboard sends a layout by name or path. The built-in layouts and the one given
//! on the command line are always allowed. Other files must be `.toml` files inside the
//! streamer's own directories (the pipelines directory and the data directory): a request names
//! a path, so without that rule a host page (or a leaked host key) could make the server read
//! any file, learn which paths exist, or hang on a FIFO. Files are opened without blocking,
//! must be regular and small, and every read happens off the async runtime
//! ([`crate::pipeline::Pipeline::find_layout`]).

use std::path::{Path, PathBuf};

use super::layout::{Layout, LayoutError, read_capped};

/// The layouts the host may switch to while live.
#[derive(Debug, Clone, Default)]
pub struct LayoutFiles {
    /// Directories whose `.toml` files may be chosen (canonicalised at each load: the data
    /// directory may not exist yet at start).
    roots: Vec<PathBuf>,
    /// The layout given on the command line (or config file), allowed wherever it is.
    given: Option<String>,
}

impl LayoutFiles {
    /// Files under `roots` (those that exist), plus `given` as it was spelled at start.
    pub fn new(roots: impl IntoIterator<Item = PathBuf>, given: Option<String>) -> Self {
        Self {
            roots: roots.into_iter().collect(),
            given,
        }
    }

    /// Loads the layout `spec` names, refusing anything outside the allowed places with the
    /// same words whether or not it exists. Blocking: call it off the async runtime.
    pub fn load(&self, spec: &str) -> Result<Layout, LayoutError> {
        if let Some(layout) = Layout::builtin(spec) {
            return Ok(layout);
        }
        if self.given.as_deref() == Some(spec) {
            return Layout::load(spec);
        }
        if !spec.ends_with(".toml") {
            return Err(LayoutError::Unknown {
                spec: spec.to_owned(),
            });
        }
        let path = self.resolve(spec).ok_or_else(|| LayoutError::Outside {
            spec: spec.to_owned(),
            places: self.places(),
        })?;
        let text = read_capped(&path, spec)?;
        Layout::from_toml(&text, spec)
    }

    /// `spec` as a canonical path inside one of the roots: as given (absolute, or relative to
    /// the working directory), else relative to each root.
    fn resolve(&self, spec: &str) -> Option<PathBuf> {
        let spec = Path::new(spec);
        let roots: Vec<PathBuf> = self
            .roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .collect();
        let relative = roots.iter().map(|root| root.join(spec));
        std::iter::once(spec.to_path_buf())
            .chain(relative.filter(|_| spec.is_relative()))
            .filter_map(|candidate| candidate.canonicalize().ok())
            .find(|path| roots.iter().any(|root| path.starts_with(root)))
    }

    fn places(&self) -> String {
        if self.roots.is_empty() {
            return "no directory (only the built-in layouts and the one given at start)".into();
        }
        self.roots
            .iter()
            .map(|root| root.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cowatch-layouts-{name}-{}-{}",
            std::process::id(),
            crate::util::id::random_token(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const SMALL: &str = include_str!("../../pipelines/layouts/inset.toml");

    #[test]
    fn builtins_and_files_inside_the_roots_load() {
        let root = dir("roots");
        std::fs::write(root.join("mine.toml"), SMALL).unwrap();
        let files = LayoutFiles::new([root.clone()], None);
        assert_eq!(files.load("inset").unwrap().name, "inset");
        assert_eq!(files.load("mine.toml").unwrap().name, "mine");
        let absolute = root.join("mine.toml");
        assert_eq!(files.load(absolute.to_str().unwrap()).unwrap().name, "mine");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn outside_the_roots_reads_the_same_whether_or_not_it_exists() {
        let root = dir("inside");
        let elsewhere = dir("outside");
        std::fs::write(elsewhere.join("there.toml"), SMALL).unwrap();
        let files = LayoutFiles::new([root.clone()], None);
        let there = elsewhere.join("there.toml");
        let missing = elsewhere.join("missing.toml");
        let a = files.load(there.to_str().unwrap()).unwrap_err().to_string();
        let b = files
            .load(missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            a.replace("there", "X"),
            b.replace("missing", "X"),
            "the texts differ: {a} / {b}"
        );
        // `..` does not climb out.
        let climb = format!(
            "../{}/there.toml",
            elsewhere.file_name().unwrap().to_str().unwrap()
        );
        assert!(matches!(
            files.load(&climb),
            Err(LayoutError::Outside { .. })
        ));
        // Not .toml at all.
        assert!(matches!(
            files.load("/dev/zero"),
            Err(LayoutError::Unknown { .. })
        ));
        let _ = std::fs::remove_dir_all(root);
        let _ = std::fs::remove_dir_all(elsewhere);
    }

    #[test]
    fn a_fifo_or_a_huge_file_inside_the_roots_is_refused_at_once() {
        let root = dir("special");
        let fifo = root.join("x.toml");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let files = LayoutFiles::new([root.clone()], None);
        // Nobody writes the FIFO: a blocking open would hang here forever.
        assert!(matches!(
            files.load("x.toml"),
            Err(LayoutError::NotAFile { .. })
        ));
        std::fs::write(root.join("big.toml"), vec![b'#'; 100_000]).unwrap();
        assert!(matches!(
            files.load("big.toml"),
            Err(LayoutError::TooBig { .. })
        ));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn the_layout_given_at_start_is_allowed_wherever_it_is() {
        let elsewhere = dir("given");
        let path = elsewhere.join("studio.toml");
        std::fs::write(&path, SMALL).unwrap();
        let spec = path.to_str().unwrap().to_owned();
        let files = LayoutFiles::new(Vec::new(), Some(spec.clone()));
        assert_eq!(files.load(&spec).unwrap().name, "studio");
        let _ = std::fs::remove_dir_all(elsewhere);
    }
}
