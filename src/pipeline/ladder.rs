//! The rendition ladder (`pipelines/ladder.toml`): the sizes of the composite that viewers
//! can receive, their bitrates, and the extra codecs for browsers without the main one.
//!
//! Like the encoder presets it is a file a streamer can edit, embedded in the binary too; a
//! copy in the pipelines directory wins. [`Ladder::load`] checks everything that does not
//! depend on the layout; [`Ladder::plan`] checks the heights against the canvas and lists the
//! encodes to build, the main one first, in the order their ids are given.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::PipelineError;
use super::presets::{self, EncoderPreset};

/// Embedded copy of the shipped ladder.
const BUILTIN: &str = include_str!("../../pipelines/ladder.toml");

/// The smallest height a rendition may have: 160x90, below which encoders refuse or the
/// picture says nothing.
const MIN_HEIGHT: u32 = 90;

/// The bitrates `--bitrate` accepts, for the same reasons.
const BITRATE_KBPS: std::ops::RangeInclusive<u32> = 1..=50_000;

/// One size of the picture, as the ladder file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// The label viewers pick in the quality menu (`360p`).
    pub name: String,
    /// Picture height in pixels; the width follows from 16:9.
    pub height: u32,
    /// Video bitrate; only the on-demand ones have their own (the main one's is `--bitrate`).
    pub bitrate_kbps: Option<u32>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LadderFile {
    #[serde(default)]
    rendition: Vec<Rung>,
    #[serde(default)]
    fallback_encoders: Vec<String>,
}

/// A checked ladder, its fallback presets loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    /// Largest first; the first is the main encode.
    rungs: Vec<Rung>,
    /// Presets that encode every rung on demand, for browsers without the main codec.
    fallback: Vec<EncoderPreset>,
    /// Where it came from, for error messages.
    origin: String,
}

/// One encode of the composite that the ladder asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Encode {
    /// The rung's name (`720p`).
    pub name: String,
    /// Picture size it encodes.
    pub width: u32,
    /// Picture height it encodes.
    pub height: u32,
    /// Its video bitrate.
    pub bitrate_kbps: u32,
    /// The encoder and payloader.
    pub preset: EncoderPreset,
    /// Whether a scaler comes before the encoder: every on-demand encode has one, so it keeps
    /// its size whatever the canvas; the main encode only when it is smaller than the canvas.
    pub scaled: bool,
}

impl Ladder {
    /// `ladder.toml` from `dir` when present, else the embedded copy; fallback encoders are
    /// looked up in `dir` first too. Fails with a message naming the file and the problem.
    pub fn load(dir: &Path) -> Result<Self, PipelineError> {
        let path = dir.join("ladder.toml");
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                PipelineError::Config(format!(
                    "cannot read {} (--pipelines-dir): {e}",
                    path.display()
                ))
            })?;
            Self::parse(&text, &path.display().to_string(), Some(dir))
        } else {
            Self::parse(BUILTIN, "built-in ladder.toml", Some(dir))
        }
    }

    /// The shipped ladder with the shipped presets, as embedded in the binary.
    pub fn builtin() -> Result<Self, PipelineError> {
        Self::parse(BUILTIN, "built-in ladder.toml", None)
            .map_err(|e| PipelineError::Internal(e.to_string()))
    }

    /// Parses and checks `text`, read from `origin`; presets come from `dir` (then the
    /// embedded ones), or only the embedded ones without a `dir`.
    fn parse(text: &str, origin: &str, dir: Option<&Path>) -> Result<Self, PipelineError> {
        let bad = |what: String| PipelineError::Config(format!("{origin}: {what}"));
        let file: LadderFile = toml::from_str(text).map_err(|e| {
            if e.message().contains("unknown field `fallback_encoders`") {
                // TOML reads a key after a [[rendition]] as part of it.
                bad("fallback_encoders must come before the first [[rendition]]".into())
            } else {
                bad(presets::one_line(&e))
            }
        })?;
        check_rungs(&file.rendition).map_err(bad)?;
        let mut seen = HashSet::new();
        let mut fallback = Vec::new();
        for name in &file.fallback_encoders {
            if !seen.insert(name.as_str()) {
                return Err(bad(format!("fallback encoder `{name}` is listed twice")));
            }
            let what = format!("fallback_encoders in {origin}");
            let preset = match dir {
                Some(dir) => EncoderPreset::load_as(name, dir, &what)?,
                None => EncoderPreset::builtin(name)?,
            };
            if let Some(twin) = fallback
                .iter()
                .find(|p: &&EncoderPreset| p.codec.eq_ignore_ascii_case(&preset.codec))
            {
                return Err(bad(format!(
                    "fallback encoders {} and {name} are both {}: a browser gets the first, keep one",
                    twin.name, preset.codec
                )));
            }
            fallback.push(preset);
        }
        Ok(Self {
            rungs: file.rendition,
            fallback,
            origin: origin.to_string(),
        })
    }

    /// Its rungs, largest first.
    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    /// The encodes to build for a `canvas` (width, height) whose main encode uses `main` at
    /// `bitrate_kbps`: the main one first (the first rung), then the main codec at every
    /// other rung, then each fallback preset whose codec differs from `main`'s at every rung.
    /// Fails when a rung is taller than the canvas.
    pub fn plan(
        &self,
        main: &EncoderPreset,
        canvas: (u32, u32),
        bitrate_kbps: u32,
    ) -> Result<Vec<Encode>, PipelineError> {
        let (canvas_width, canvas_height) = canvas;
        if let Some(tall) = self.rungs.iter().find(|r| r.height > canvas_height) {
            return Err(PipelineError::Config(format!(
                "{}: rendition {} is {} pixels tall, taller than the layout's {}x{canvas_height} \
                 canvas: renditions are scaled down from the canvas, never up",
                self.origin, tall.name, tall.height, canvas_width
            )));
        }
        let encode = |rung: &Rung, preset: &EncoderPreset, main: bool| {
            let scaled = !main || rung.height < canvas_height;
            Encode {
                name: rung.name.clone(),
                width: if scaled {
                    width_for(rung.height)
                } else {
                    canvas_width
                },
                height: rung.height,
                // Only the top rung has none (checked at load): it is --bitrate in any codec.
                bitrate_kbps: rung.bitrate_kbps.unwrap_or(bitrate_kbps),
                preset: preset.clone(),
                scaled,
            }
        };
        let (top, rest) = self
            .rungs
            .split_first()
            .ok_or_else(|| PipelineError::Internal("an empty ladder passed its check".into()))?;
        let fallback = self
            .fallback
            .iter()
            .filter(|p| !p.codec.eq_ignore_ascii_case(&main.codec));
        Ok(std::iter::once(encode(top, main, true))
            .chain(rest.iter().map(|rung| encode(rung, main, false)))
            .chain(fallback.flat_map(|p| self.rungs.iter().map(move |rung| encode(rung, p, false))))
            .collect())
    }
}

/// The width of a 16:9 picture `height` tall, rounded to even (encoders need that).
pub fn width_for(height: u32) -> u32 {
    (height * 8 + 4) / 9 * 2
}

/// Every rule a streamer might break in the `[[rendition]]` entries, as one message.
fn check_rungs(rungs: &[Rung]) -> Result<(), String> {
    let Some(top) = rungs.first() else {
        return Err("no [[rendition]]: the ladder needs at least one, the main encode".into());
    };
    if top.bitrate_kbps.is_some() {
        return Err(format!(
            "rendition {} is the main encode: its bitrate is --bitrate, remove its bitrate_kbps",
            top.name
        ));
    }
    let (mut names, mut heights) = (HashSet::new(), HashSet::new());
    for (i, rung) in rungs.iter().enumerate() {
        let name = &rung.name;
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || name.len() > 16 || !name.chars().all(valid) {
            return Err(format!(
                "rendition name `{name}`: use 1 to 16 letters, digits, '-' or '_' (like 360p)"
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(format!("two renditions are named {name}"));
        }
        if rung.height % 2 != 0 || rung.height < MIN_HEIGHT {
            return Err(format!(
                "rendition {name}: height {} must be even and at least {MIN_HEIGHT}",
                rung.height
            ));
        }
        if !heights.insert(rung.height) {
            return Err(format!(
                "rendition {name}: another rendition is {} pixels tall too",
                rung.height
            ));
        }
        if let Some(above) = i.checked_sub(1).map(|j| &rungs[j])
            && above.height < rung.height
        {
            return Err(format!(
                "rendition {} comes before the taller {name}: list the largest first",
                above.name
            ));
        }
        if let Some(kbps) = rung.bitrate_kbps
            && !BITRATE_KBPS.contains(&kbps)
        {
            return Err(format!(
                "rendition {name}: bitrate_kbps {kbps} is out of range: use {} to {}",
                BITRATE_KBPS.start(),
                BITRATE_KBPS.end()
            ));
        }
        if i > 0 && rung.bitrate_kbps.is_none() {
            return Err(format!("rendition {name}: set its bitrate_kbps"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ladder, String> {
        Ladder::parse(text, "test.toml", Some(Path::new("/nonexistent"))).map_err(|e| e.to_string())
    }

    fn h264() -> EncoderPreset {
        EncoderPreset::builtin("h264").unwrap()
    }

    #[test]
    fn the_shipped_ladder_builds_720p_and_360p_in_both_codecs() {
        let ladder = Ladder::load(Path::new("/nonexistent")).unwrap();
        assert_eq!(ladder, Ladder::builtin().unwrap());
        let plan = ladder.plan(&h264(), (1280, 720), 2500).unwrap();
        let got: Vec<_> = plan
            .iter()
            .map(|e| {
                (
                    e.preset.codec.as_str(),
                    e.name.as_str(),
                    e.width,
                    e.height,
                    e.bitrate_kbps,
                    e.scaled,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("H264", "720p", 1280, 720, 2500, false),
                ("H264", "360p", 640, 360, 600, true),
                ("VP8", "720p", 1280, 720, 2500, true),
                ("VP8", "360p", 640, 360, 600, true),
            ]
        );
        // A VP8 party needs no VP8 fallback.
        let vp8 = EncoderPreset::builtin("vp8").unwrap();
        let plan = ladder.plan(&vp8, (1280, 720), 2500).unwrap();
        assert_eq!(
            plan.iter()
                .map(|e| (e.preset.codec.as_str(), e.name.as_str()))
                .collect::<Vec<_>>(),
            [("VP8", "720p"), ("VP8", "360p")]
        );
    }

    #[test]
    fn widths_keep_16_9_and_stay_even() {
        assert_eq!(width_for(720), 1280);
        assert_eq!(width_for(360), 640);
        assert_eq!(width_for(180), 320);
        assert_eq!(width_for(480), 854);
        assert_eq!(width_for(1080), 1920);
        assert!(
            (90..=2160)
                .step_by(2)
                .all(|h| width_for(h).is_multiple_of(2))
        );
    }

    #[test]
    fn a_main_rung_below_the_canvas_is_scaled_and_one_above_refused() {
        let ladder = parse(
            "[[rendition]]\nname = \"720p\"\nheight = 720\n\
             [[rendition]]\nname = \"360p\"\nheight = 360\nbitrate_kbps = 600\n",
        )
        .unwrap();
        let plan = ladder.plan(&h264(), (1920, 1080), 4000).unwrap();
        assert_eq!(
            (plan[0].width, plan[0].height, plan[0].scaled),
            (1280, 720, true)
        );
        assert_eq!(plan.len(), 2, "no fallback encoders listed");
        let err = ladder.plan(&h264(), (640, 480), 1000).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("test.toml") && err.contains("720p") && err.contains("640x480"),
            "{err}"
        );
    }

    #[test]
    fn every_mistake_is_named() {
        let rung = |name: &str, height: u32, kbps: Option<u32>| {
            let kbps = kbps.map_or(String::new(), |k| format!("bitrate_kbps = {k}\n"));
            format!("[[rendition]]\nname = \"{name}\"\nheight = {height}\n{kbps}")
        };
        let top = rung("720p", 720, None);
        let cases = [
            ("fallback_encoders = []".to_string(), "at least one"),
            (format!("{top}{}", rung("360p", 361, Some(600))), "even"),
            (
                format!("{top}{}", rung("720p", 360, Some(600))),
                "two renditions are named 720p",
            ),
            (
                format!("{top}{}", rung("low", 720, Some(600))),
                "720 pixels tall too",
            ),
            (
                format!("{top}{}", rung("360p", 360, Some(0))),
                "bitrate_kbps 0",
            ),
            (
                format!("{top}{}", rung("360p", 360, None)),
                "set its bitrate_kbps",
            ),
            (rung("720p", 720, Some(2500)), "--bitrate"),
            (format!("{}{top}", rung("360p", 360, None)), "largest first"),
            (format!("{top}{}", rung("3 60p", 360, Some(600))), "`3 60p`"),
            (
                format!("{top}{}", rung("tiny", 40, Some(100))),
                "at least 90",
            ),
            (format!("fallback_encoders = [\"h265\"]\n{top}"), "h265"),
            (
                format!("fallback_encoders = [\"vp8\", \"vp8\"]\n{top}"),
                "twice",
            ),
            (
                format!("{top}fallback_encoders = []"),
                "before the first [[rendition]]",
            ),
            (format!("{top}colour = 1"), "colour"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(
                err.contains("test.toml") && err.contains(expected),
                "{text}\n→ {err}\n(expected it to name `{expected}`)"
            );
        }
        let err = parse(&format!("fallback_encoders = [\"h265\"]\n{top}")).unwrap_err();
        assert!(err.contains("fallback_encoders"), "{err}");
    }

    #[test]
    fn two_fallbacks_of_one_codec_are_refused() {
        let dir = scratch_dir("twins");
        std::fs::write(dir.join("encoders/vp8b.toml"), BUILTIN_VP8).unwrap();
        let text = "fallback_encoders = [\"vp8\", \"vp8b\"]\n[[rendition]]\nname = \"720p\"\nheight = 720\n";
        let err = Ladder::parse(text, "test.toml", Some(&dir))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vp8b") && err.contains("both VP8"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory with an `encoders/` folder.
    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cowatch-ladder-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("encoders")).unwrap();
        dir
    }

    #[test]
    fn a_ladder_in_the_pipelines_dir_wins_and_its_presets_too() {
        let dir = scratch_dir("wins");
        let mut vp8 = BUILTIN_VP8.replace("name = \"vp8\"", "name = \"myvp8\"");
        vp8.push('\n');
        std::fs::write(dir.join("encoders/myvp8.toml"), vp8).unwrap();
        std::fs::write(
            dir.join("ladder.toml"),
            "fallback_encoders = [\"myvp8\"]\n\
             [[rendition]]\nname = \"720p\"\nheight = 720\n\
             [[rendition]]\nname = \"small\"\nheight = 180\nbitrate_kbps = 250\n",
        )
        .unwrap();
        let ladder = Ladder::load(&dir).unwrap();
        let plan = ladder.plan(&h264(), (1280, 720), 2500).unwrap();
        let names: Vec<_> = plan
            .iter()
            .map(|e| format!("{}-{}", e.preset.name, e.name))
            .collect();
        assert_eq!(
            names,
            ["h264-720p", "h264-small", "myvp8-720p", "myvp8-small"]
        );
        assert_eq!(
            (plan[1].width, plan[1].height, plan[1].bitrate_kbps),
            (320, 180, 250)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const BUILTIN_VP8: &str = include_str!("../../pipelines/encoders/vp8.toml");
}
