//! What feeds the pipeline: the movie, the webcam and the microphone, as the user names them.

use std::path::Path;

use serde::Serialize;

use super::PipelineError;
use super::presets::SourceCatalog;

/// Where the movie comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MovieSource {
    /// A file or network URI, decoded by `uridecodebin3`.
    Uri {
        /// The URI handed to GStreamer.
        uri: String,
    },
    /// The demo's generated picture and tone.
    Generated {
        /// Video source description.
        video: String,
        /// Audio source description.
        audio: String,
        /// Length before it ends (and loops in the demo).
        seconds: u64,
    },
}

impl MovieSource {
    /// Parses `--movie`: a URI (`scheme://…`) or a path to an existing file.
    pub fn parse(spec: &str) -> Result<Self, PipelineError> {
        if spec.contains("://") {
            return Ok(Self::Uri { uri: spec.into() });
        }
        let path = Path::new(spec);
        let meta = std::fs::metadata(path).map_err(|e| {
            PipelineError::Movie(format!(
                "movie not found: {spec} (--movie): {}",
                io_reason(&e)
            ))
        })?;
        if !meta.is_file() {
            return Err(PipelineError::Movie(format!(
                "movie is not a file: {spec} (--movie)"
            )));
        }
        let absolute = std::fs::canonicalize(path).map_err(|e| {
            PipelineError::Movie(format!("cannot open movie {spec} (--movie): {e}"))
        })?;
        let uri = glib::filename_to_uri(&absolute, None)
            .map_err(|e| PipelineError::Movie(format!("cannot open movie {spec}: {e}")))?;
        Ok(Self::Uri { uri: uri.into() })
    }

    /// Where the movie is, as the user wrote it: a local path for files, else the URI.
    pub fn location(&self) -> String {
        match self {
            Self::Uri { uri } => glib::filename_from_uri(uri)
                .map(|(path, _)| path.display().to_string())
                .unwrap_or_else(|_| uri.clone()),
            Self::Generated { .. } => "demo movie".into(),
        }
    }

    /// The demo movie described in `pipelines/sources.toml`.
    pub fn demo(catalog: &SourceCatalog) -> Self {
        Self::Generated {
            video: catalog.demo.video.clone(),
            audio: catalog.demo.audio.clone(),
            seconds: catalog.demo.seconds,
        }
    }

    /// A short name for logs and `/healthz`.
    pub fn title(&self) -> String {
        match self {
            Self::Uri { uri } => uri
                .rsplit('/')
                .next()
                .map(|s| {
                    glib::uri_unescape_string(s, None::<&str>)
                        .map_or(s.to_string(), |u| u.to_string())
                })
                .unwrap_or_else(|| uri.clone()),
            Self::Generated { .. } => "demo movie".into(),
        }
    }
}

/// Where the webcam comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "description", rename_all = "snake_case")]
pub enum WebcamSource {
    /// No camera: the webcam rectangle shows the "camera off" slate.
    None,
    /// A GStreamer source description producing video.
    Description(String),
}

impl WebcamSource {
    /// Parses `--webcam auto|none|test|v4l2:/dev/videoN|'<gst source description>'`.
    pub fn parse(spec: &str, catalog: &SourceCatalog) -> Self {
        match spec {
            "none" | "off" => Self::None,
            "test" => Self::Description(catalog.webcam.test.clone()),
            "auto" => {
                if Path::new("/dev/video0").exists() {
                    Self::Description(catalog.webcam.v4l2.replace("{device}", "/dev/video0"))
                } else {
                    Self::None
                }
            }
            _ => match spec.strip_prefix("v4l2:") {
                Some(device) => Self::Description(catalog.webcam.v4l2.replace("{device}", device)),
                None => Self::Description(spec.into()),
            },
        }
    }
}

/// Where the microphone comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "description", rename_all = "snake_case")]
pub enum MicSource {
    /// Movie audio only.
    None,
    /// A GStreamer source description producing audio.
    Description(String),
}

impl MicSource {
    /// Parses `--mic auto|none|test|'<gst source description>'`. `auto` is the system's
    /// default capture device when [`capture_device_likely`] finds one, else no mic.
    pub fn parse(spec: &str, catalog: &SourceCatalog) -> Self {
        Self::parse_with(spec, catalog, || {
            capture_device_likely(&CaptureProbe::system())
        })
    }

    /// [`MicSource::parse`] with the device check given (tests).
    pub fn parse_with(spec: &str, catalog: &SourceCatalog, has_device: impl Fn() -> bool) -> Self {
        match spec {
            "none" | "off" => Self::None,
            "test" => Self::Description(catalog.mic.test.clone()),
            "auto" if has_device() => Self::Description(catalog.mic.auto.clone()),
            "auto" => Self::None,
            _ => Self::Description(spec.into()),
        }
    }
}

/// Where a capture device would show, for [`capture_device_likely`].
#[derive(Debug, Clone)]
pub struct CaptureProbe {
    /// ALSA's device nodes (`/dev/snd`).
    pub alsa_dir: std::path::PathBuf,
    /// The sound server's sockets (`$XDG_RUNTIME_DIR`), if known.
    pub runtime_dir: Option<std::path::PathBuf>,
    /// `$PULSE_SERVER` is set.
    pub pulse_server: bool,
}

impl CaptureProbe {
    /// This machine's.
    pub fn system() -> Self {
        Self {
            alsa_dir: "/dev/snd".into(),
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(Into::into),
            pulse_server: std::env::var_os("PULSE_SERVER").is_some_and(|v| !v.is_empty()),
        }
    }
}

/// Whether `autoaudiosrc` has anything to open: a sound server (PulseAudio, PipeWire) or an
/// ALSA capture device. Asked before opening it because without one, ALSA and OpenAL print
/// some twenty lines of their own on stderr while GStreamer probes them, before cowatch can
/// say anything.
pub fn capture_device_likely(probe: &CaptureProbe) -> bool {
    if probe.pulse_server {
        return true;
    }
    let server = probe
        .runtime_dir
        .as_ref()
        .is_some_and(|dir| dir.join("pulse/native").exists() || dir.join("pipewire-0").exists());
    // ALSA capture nodes are pcmC<card>D<device>c.
    let alsa = std::fs::read_dir(&probe.alsa_dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("pcmC") && name.ends_with('c')
        })
    });
    server || alsa
}

/// A publisher's camera and mic (WHIP ingest), in place of the local webcam and mic while it
/// publishes: GStreamer descriptions, as a local source is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publication {
    /// Produces the publisher's video.
    pub video: String,
    /// Produces the publisher's voice, when it sends audio.
    pub audio: Option<String>,
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_movie_names_the_path_and_flag() {
        let err = MovieSource::parse("/nonexistent/film.mkv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/film.mkv"), "{err}");
        assert!(err.contains("--movie"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn uris_pass_through_and_paths_become_file_uris() {
        assert_eq!(
            MovieSource::parse("https://example.com/a.mp4").unwrap(),
            MovieSource::Uri {
                uri: "https://example.com/a.mp4".into()
            }
        );
        let file = std::env::temp_dir().join("cowatch source test.mkv");
        std::fs::write(&file, b"x").unwrap();
        let MovieSource::Uri { uri } = MovieSource::parse(file.to_str().unwrap()).unwrap() else {
            panic!("expected a uri");
        };
        assert!(uri.starts_with("file:///"), "{uri}");
        assert!(uri.contains("%20"), "{uri}");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn mic_auto_is_no_mic_without_a_sound_server_or_capture_device() {
        let dir = std::env::temp_dir().join(format!("cowatch-capture-{}", std::process::id()));
        let snd = dir.join("snd");
        let run = dir.join("run");
        std::fs::create_dir_all(&snd).unwrap();
        std::fs::create_dir_all(run.join("pulse")).unwrap();
        let probe = CaptureProbe {
            alsa_dir: snd.clone(),
            runtime_dir: Some(run.clone()),
            pulse_server: false,
        };
        assert!(!capture_device_likely(&probe), "nothing to open");
        // Playback only (…p) is no microphone.
        std::fs::write(snd.join("pcmC0D0p"), b"").unwrap();
        assert!(!capture_device_likely(&probe));
        std::fs::write(snd.join("pcmC0D0c"), b"").unwrap();
        assert!(capture_device_likely(&probe), "an ALSA capture node");
        std::fs::remove_file(snd.join("pcmC0D0c")).unwrap();
        std::fs::write(run.join("pulse/native"), b"").unwrap();
        assert!(capture_device_likely(&probe), "a PulseAudio socket");
        std::fs::remove_dir_all(&dir).unwrap();

        let catalog = SourceCatalog::load(Path::new("/nonexistent")).unwrap();
        assert_eq!(
            MicSource::parse_with("auto", &catalog, || false),
            MicSource::None
        );
        assert!(matches!(
            MicSource::parse_with("auto", &catalog, || true),
            MicSource::Description(_)
        ));
        assert!(matches!(
            MicSource::parse_with("test", &catalog, || false),
            MicSource::Description(_)
        ));
    }

    #[test]
    fn webcam_specs() {
        let catalog = SourceCatalog::load(Path::new("/nonexistent")).unwrap();
        assert_eq!(WebcamSource::parse("none", &catalog), WebcamSource::None);
        let WebcamSource::Description(d) = WebcamSource::parse("v4l2:/dev/video3", &catalog) else {
            panic!()
        };
        assert!(d.contains("/dev/video3"));
        assert_eq!(
            WebcamSource::parse("videotestsrc", &catalog),
            WebcamSource::Description("videotestsrc".into())
        );
    }
}
