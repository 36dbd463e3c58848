//! The editable parts of the pipeline: encoder presets and source descriptions.
//!
//! They live as TOML in `pipelines/` so a streamer can tune them without a rebuild. The copies
//! shipped with the source are embedded too, so the binary works from any directory; a file in
//! the pipelines directory wins over the embedded copy.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PipelineError;

/// Embedded copies of the shipped encoder presets, by name.
const BUILTIN_ENCODERS: &[(&str, &str)] = &[
    ("h264", include_str!("../../pipelines/encoders/h264.toml")),
    ("vp8", include_str!("../../pipelines/encoders/vp8.toml")),
];

/// Embedded copy of the shipped source descriptions.
const BUILTIN_SOURCES: &str = include_str!("../../pipelines/sources.toml");

/// One video encoder preset: the elements between the composite and RTP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderPreset {
    /// Short name, shown in `/healthz`.
    pub name: String,
    /// RTP encoding name as used in SDP (`H264`, `VP8`).
    pub codec: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// RTP payload type the payloader stamps; the broadcaster may rewrite it per viewer.
    pub payload_type: u8,
    /// Encoder launch description with `{bitrate_kbps}`, `{bitrate_bps}`, `{keyframe_frames}`
    /// and `{fps}` placeholders.
    pub encoder: String,
    /// Caps forced after the encoder (profile, stream format).
    pub caps: String,
    /// Parser placed before the recorder's muxer.
    pub parser: String,
    /// RTP payloader launch description.
    pub payloader: String,
}

impl EncoderPreset {
    /// Loads `spec`: a preset name (looked up in `dir`, then among the embedded ones) or a path
    /// to a `.toml` file.
    pub fn load(spec: &str, dir: &Path) -> Result<Self, PipelineError> {
        Self::load_as(spec, dir, "--encoder")
    }

    /// [`EncoderPreset::load`] for a preset named in `what` (a flag, a file's setting), which
    /// errors name.
    pub fn load_as(spec: &str, dir: &Path, what: &str) -> Result<Self, PipelineError> {
        let (text, origin) = if spec.ends_with(".toml") || spec.contains('/') {
            (read(Path::new(spec), what)?, spec.to_string())
        } else {
            let on_disk = dir.join("encoders").join(format!("{spec}.toml"));
            if on_disk.is_file() {
                (read(&on_disk, what)?, on_disk.display().to_string())
            } else {
                let builtin = BUILTIN_ENCODERS
                    .iter()
                    .find(|(name, _)| *name == spec)
                    .ok_or_else(|| {
                        PipelineError::Config(format!(
                            "unknown encoder `{spec}` ({what}): expected h264, vp8, a preset in {} or a path to a .toml preset",
                            dir.join("encoders").display()
                        ))
                    })?;
                (builtin.1.to_string(), format!("built-in encoder {spec}"))
            }
        };
        toml::from_str(&text).map_err(|e| {
            PipelineError::Config(format!("encoder preset {origin}: {}", one_line(&e)))
        })
    }

    /// The shipped preset `name` (`h264`, `vp8`), as embedded in the binary.
    pub fn builtin(name: &str) -> Result<Self, PipelineError> {
        let (_, text) = BUILTIN_ENCODERS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| PipelineError::Internal(format!("no built-in encoder {name}")))?;
        toml::from_str(text).map_err(|e| {
            PipelineError::Internal(format!("built-in encoder {name}: {}", one_line(&e)))
        })
    }

    /// The encoder description with placeholders filled in.
    pub fn encoder_description(&self, bitrate_kbps: u32, fps: u32) -> String {
        // At most 2 s between keyframes so a viewer that misses one recovers quickly.
        let keyframe_frames = (fps * 2).max(1);
        self.encoder
            .replace("{bitrate_kbps}", &bitrate_kbps.to_string())
            .replace(
                "{bitrate_bps}",
                &(u64::from(bitrate_kbps) * 1000).to_string(),
            )
            .replace("{keyframe_frames}", &keyframe_frames.to_string())
            .replace("{fps}", &fps.to_string())
    }
}

/// Source descriptions for the `test`/`auto`/`v4l2:` choices and the demo movie.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCatalog {
    /// Webcam descriptions.
    pub webcam: WebcamSources,
    /// Microphone descriptions.
    pub mic: MicSources,
    /// The demo's generated movie.
    pub demo: DemoMovie,
}

/// Webcam descriptions from `pipelines/sources.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebcamSources {
    /// `--webcam test`.
    pub test: String,
    /// `--webcam v4l2:DEVICE`, with `{device}` replaced.
    pub v4l2: String,
}

/// Microphone descriptions from `pipelines/sources.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicSources {
    /// `--mic test`.
    pub test: String,
    /// `--mic auto`.
    pub auto: String,
}

/// The generated movie of `cowatch demo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoMovie {
    /// Video source description.
    pub video: String,
    /// Audio source description.
    pub audio: String,
    /// Length before it loops.
    pub seconds: u64,
}

impl SourceCatalog {
    /// Loads `sources.toml` from `dir` when present, else the embedded copy.
    pub fn load(dir: &Path) -> Result<Self, PipelineError> {
        let path = dir.join("sources.toml");
        let (text, origin) = if path.is_file() {
            (read(&path, "--pipelines-dir")?, path.display().to_string())
        } else {
            (BUILTIN_SOURCES.to_string(), "built-in sources.toml".into())
        };
        toml::from_str(&text)
            .map_err(|e| PipelineError::Config(format!("{origin}: {}", one_line(&e))))
    }
}

/// The default directory of editable pipeline parts: `./pipelines` when it exists.
pub fn default_dir() -> PathBuf {
    PathBuf::from("pipelines")
}

fn read(path: &Path, flag: &str) -> Result<String, PipelineError> {
    std::fs::read_to_string(path)
        .map_err(|e| PipelineError::Config(format!("cannot read {} ({flag}): {e}", path.display())))
}

/// TOML errors span several lines with a source excerpt; users get one line.
pub(crate) fn one_line(e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{message} (at byte {})", span.start),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_parse() {
        let dir = Path::new("/nonexistent");
        let h264 = EncoderPreset::load("h264", dir).unwrap();
        assert_eq!(h264.codec, "H264");
        let desc = h264.encoder_description(2500, 30);
        assert!(desc.contains("bitrate=2500"), "{desc}");
        assert!(desc.contains("key-int-max=60"), "{desc}");
        let vp8 = EncoderPreset::load("vp8", dir).unwrap();
        assert!(
            vp8.encoder_description(2500, 30)
                .contains("target-bitrate=2500000")
        );
        SourceCatalog::load(dir).unwrap();
    }

    #[test]
    fn unknown_preset_is_named() {
        let err = EncoderPreset::load("h265", Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("h265"), "{err}");
    }
}
