//! `cowatch bench pipeline` answers one question: does compositing and encoding the party in
//! cowatch cost more CPU than the obvious alternative, ffmpeg with the same overlay graph and
//! the same x264 settings? Both contenders are separate processes decoding the same generated
//! files in real time; their CPU time comes from the kernel (`wait4` rusage), so nothing
//! depends on how either program reports itself.
//!
//! Then the rendition rows: the party's pipeline alone, as it was before the ladder, with the
//! whole ladder idle, and with one on-demand rendition running (VP8 720p, H.264 360p). Their
//! CPU comes from `/proc` over a steady-state window, in all and for the threads of the main
//! encode and of the running branch, which says what a rendition costs against the main
//! encode (issue #11's target: a 360p branch at most 25 % of it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use gstreamer as gst;

use super::process::{Contender, STOP_TIMEOUT};
use super::server::{Server, block_on};
use super::{Scratch, median};
use gst::prelude::*;

/// Canvas of the benchmark: the side-panel layout's.
const CANVAS: (u32, u32) = (1280, 720);
/// Output frame rate of both contenders.
const FPS: u32 = 30;
/// Video bitrate of both contenders.
const BITRATE_KBPS: u32 = 2500;
/// Extra input beyond the measured seconds, so neither contender runs out of movie or webcam
/// while it starts up.
const SPARE_INPUT_S: u64 = 5;

/// What `cowatch bench pipeline` measures; the flags of the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineOptions {
    /// Seconds of output per run.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Runs per contender; the table shows medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Internal: be the pipeline-only contender of a rendition row, with this rendition
    /// running, on the inputs in `--branch-child-inputs`.
    #[arg(long, hide = true, value_enum, requires = "branch_child_inputs")]
    pub branch_child: Option<BranchMode>,
    /// Internal: where a rendition row's contender finds its inputs.
    #[arg(long, hide = true)]
    pub branch_child_inputs: Option<PathBuf>,
}

/// What runs in one contender of the rendition rows: the party's pipeline alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BranchMode {
    /// The pipeline as it was before the ladder: the main encode and an idle VP8 rendition.
    Before,
    /// The shipped ladder, every on-demand rendition idle: everyone watches the main stream.
    Idle,
    /// The VP8 720p rendition running, as while a Firefox without H.264 watches.
    Vp8,
    /// The H.264 360p rendition running, as while a viewer on a weak link watches.
    #[value(name = "360p")]
    H264Low,
}

impl BranchMode {
    const ALL: [Self; 4] = [Self::Before, Self::Idle, Self::Vp8, Self::H264Low];

    /// Its name in the table.
    fn contender(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::Idle => "all-idle",
            Self::Vp8 => "vp8-720p",
            Self::H264Low => "h264-360p",
        }
    }

    /// The rendition it runs (codec, ladder name), if any.
    fn rendition(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Before | Self::Idle => None,
            Self::Vp8 => Some(("VP8", "720p")),
            Self::H264Low => Some(("H264", "360p")),
        }
    }

    /// The name its branch's thread starts with: the queue's task, `{preset}-{rung}-queue:src`
    /// cut to Linux's 15 characters. x264's worker threads inherit it.
    fn branch_thread(self) -> Option<&'static str> {
        match self {
            Self::Before | Self::Idle => None,
            Self::Vp8 => Some("vp8-720p-queue"),
            Self::H264Low => Some("h264-360p-queue"),
        }
    }
}

/// Threads of the main 720p encode: the encoder's queue (x264 and its workers, which inherit
/// the name) and the payloader's queue.
const MAIN_ENCODE_THREADS: [&str; 2] = ["video-encode-qu", "video-pay-queue"];

/// Composite + encode cost against ffmpeg: prints a table of `runs` alternating runs per
/// contender, `seconds` of output each, and the ratio of the medians.
pub fn pipeline(options: &PipelineOptions) -> anyhow::Result<()> {
    let (seconds, runs) = (options.seconds, options.runs);
    if seconds == 0 || runs == 0 {
        bail!("--seconds and --runs must both be at least 1");
    }
    if let (Some(mode), Some(dir)) = (options.branch_child, &options.branch_child_inputs) {
        return branch_child(mode, &Inputs::in_dir(dir), seconds);
    }
    let ffmpeg = ffmpeg_version()?;
    let scratch = Scratch::new()?;
    let started = Instant::now();
    let inputs = Inputs::generate(&scratch.0, seconds + SPARE_INPUT_S)?;
    println!(
        "inputs: {} s of 1920x1080@{FPS} H.264 + Opus movie and 640x480@{FPS} H.264 webcam, generated in {:.1} s",
        seconds + SPARE_INPUT_S,
        started.elapsed().as_secs_f64()
    );
    println!(
        "cowatch bench pipeline: {seconds} s of {}x{}@{FPS} side-panel composite, H.264 {BITRATE_KBPS} kbit/s + Opus, {runs} runs each",
        CANVAS.0, CANVAS.1
    );
    println!("{}", Measurement::HEADER);
    let mut cowatch = Vec::with_capacity(runs);
    let mut reference = Vec::with_capacity(runs);
    let mut branches: Vec<Vec<Measurement>> = BranchMode::ALL.map(|_| Vec::new()).into();
    for run in 1..=runs {
        // Alternating spreads any drift of the machine (thermal, neighbours) over both.
        let m = run_cowatch(&inputs, &scratch.0, seconds)
            .with_context(|| format!("cowatch run {run}"))?;
        m.print(run);
        cowatch.push(m);
        let m = run_ffmpeg(&inputs, &scratch.0, seconds)
            .with_context(|| format!("ffmpeg run {run}"))?;
        m.print(run);
        reference.push(m);
        for (mode, runs) in BranchMode::ALL.into_iter().zip(&mut branches) {
            let m = run_branch(&scratch.0, seconds, mode)
                .with_context(|| format!("{} run {run}", mode.contender()))?;
            m.print(run);
            runs.push(m);
        }
    }
    summarize(&cowatch, &reference, &ffmpeg);
    summarize_branches(&branches);
    Ok(())
}

/// The rendition rows: what each on-demand rendition costs running, against the idle ladder
/// and against the main 720p encode, and what the idle ladder costs against the pipeline
/// before it. `branches` are in [`BranchMode::ALL`]'s order.
fn summarize_branches(branches: &[Vec<Measurement>]) {
    let cost = |ms: &[Measurement]| median(ms.iter().map(Measurement::cost).collect());
    let threads = |ms: &[Measurement], f: fn(&Threads) -> f64| {
        median(
            ms.iter()
                .filter_map(|m| m.threads.as_ref())
                .map(f)
                .collect(),
        )
    };
    let [before, idle, vp8, low] = branches else {
        return;
    };
    let (before_cost, idle_cost) = (cost(before), cost(idle));
    let main_encode = threads(idle, |t| t.main_encode);
    println!(
        "renditions (pipeline only, steady state, medians, cpu_s/out_s): before the ladder (720p + idle VP8) {before_cost:.3}, ladder all idle {idle_cost:.3} (idle/before {:.2}); main 720p encode threads {main_encode:.3}",
        idle_cost / before_cost
    );
    for (name, on) in [("VP8 720p", vp8), ("H.264 360p", low)] {
        let on_cost = cost(on);
        let (branch, main) = (threads(on, |t| t.branch), threads(on, |t| t.main_encode));
        println!(
            "{name} on: {on_cost:.3} (+{:.3} over all idle); its branch's threads {branch:.3}, the 720p encode's {main:.3} in the same runs",
            on_cost - idle_cost,
        );
    }
    // Both measured in the same window of the same run, so a neighbour's load hits both.
    let ratio = threads(low, |t| t.branch / t.main_encode);
    println!("360p branch / 720p encode: {ratio:.2}  (target ≤ 0.25)");
    for m in branches.iter().flatten() {
        if let Some(note) = &m.note {
            println!("{}: {note}", m.contender);
        }
    }
}

/// Prints the medians, the ratio, and a warning for every run whose numbers do not count.
fn summarize(cowatch: &[Measurement], reference: &[Measurement], ffmpeg: &str) {
    let ours = median(cowatch.iter().map(Measurement::cost).collect());
    let theirs = median(reference.iter().map(Measurement::cost).collect());
    println!(
        "median cowatch cpu_s/out_s: {ours:.3}   median ffmpeg (reference: ffmpeg {ffmpeg} libx264 ultrafast zerolatency): {theirs:.3}"
    );
    println!(
        "ratio cowatch/ffmpeg: {:.2}  (target ≤ 1.00)",
        ours / theirs
    );
    for m in cowatch.iter().chain(reference) {
        // A contender that skipped frames or work would look cheap; say so next to the ratio.
        if m.fps < f64::from(FPS) * 0.95 {
            println!(
                "warning: {} produced {:.2} frames/s, short of {FPS}: its cost is understated",
                m.contender, m.fps
            );
        }
        if let Some(note) = &m.note {
            println!("warning: {}: {note}", m.contender);
        }
    }
}

/// One contender's run.
struct Measurement {
    /// `cowatch` or `ffmpeg`.
    contender: &'static str,
    /// User + system CPU seconds of the whole process, start-up and shutdown included.
    cpu_s: f64,
    /// Seconds of output the CPU time paid for.
    out_s: f64,
    /// Spawn to exit.
    wall_s: f64,
    /// Video frames encoded per output second (the main encode's).
    fps: f64,
    /// Peak resident memory.
    peak_rss_mib: f64,
    /// Why this run's numbers might not compare (e.g. the webcam was lost).
    note: Option<String>,
    /// Where the CPU went inside a pipeline-only contender.
    threads: Option<Threads>,
}

/// CPU-seconds per output second of parts of a pipeline-only contender, by thread name.
struct Threads {
    /// The main 720p encode and its payloader.
    main_encode: f64,
    /// The running rendition's branch (scaler, encoder, payloader); 0 with none running.
    branch: f64,
}

impl Measurement {
    const HEADER: &str =
        "run  contender  cpu_s    out_s   wall_s  cpu_s/out_s  fps     peak_rss_MiB  notes";

    fn cost(&self) -> f64 {
        self.cpu_s / self.out_s
    }

    fn print(&self, run: usize) {
        println!(
            "{run:<4} {:<10} {:<8.3} {:<7.2} {:<7.2} {:<12.3} {:<7.2} {:<13.1} {}",
            self.contender,
            self.cpu_s,
            self.out_s,
            self.wall_s,
            self.cost(),
            self.fps,
            self.peak_rss_mib,
            self.note.as_deref().unwrap_or("-")
        );
    }
}

/// The generated media both contenders decode.
struct Inputs {
    /// 1080p30 H.264 + Opus in Matroska.
    movie: PathBuf,
    /// 480p30 H.264 in Matroska, for ffmpeg.
    webcam_mkv: PathBuf,
    /// The very same H.264 stream as an Annex B file, for cowatch. cowatch ghosts the unlinked
    /// pads of a `--webcam` description before its delayed links are made, so a demuxer's
    /// dynamic pads never link (`matroskademux ! h264parse` fails with not-linked); a raw
    /// stream needs no demuxer and h264parse times it from the SPS.
    webcam_h264: PathBuf,
}

impl Inputs {
    /// Where the inputs are (or go) in `dir`.
    fn in_dir(dir: &Path) -> Self {
        Self {
            movie: dir.join("movie.mkv"),
            webcam_mkv: dir.join("webcam.mkv"),
            webcam_h264: dir.join("webcam.h264"),
        }
    }

    /// The `--webcam` description that decodes the webcam file.
    fn webcam_description(&self) -> String {
        format!(
            "filesrc location=\"{}\" ! h264parse ! avdec_h264",
            self.webcam_h264.display()
        )
    }

    /// Encodes the movie and the webcam, `seconds` long each, into `dir`.
    fn generate(dir: &Path, seconds: u64) -> anyhow::Result<Self> {
        gst::init().context("cannot initialise GStreamer")?;
        let inputs = Self::in_dir(dir);
        let frames = seconds * u64::from(FPS);
        // superfast keeps CABAC and B-frames, so decoding costs what a real file's would.
        let movie = format!(
            "videotestsrc pattern=smpte horizontal-speed=4 num-buffers={frames} \
             ! video/x-raw,format=I420,width=1920,height=1080,framerate={FPS}/1 \
             ! x264enc speed-preset=superfast bitrate=4000 key-int-max=60 ! h264parse \
             ! matroskamux name=mux ! filesink location=\"{movie}\" \
             audiotestsrc num-buffers={abufs} samplesperbuffer=960 freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=128000 ! mux.",
            abufs = seconds * 50,
            movie = inputs.movie.display(),
        );
        let webcam = format!(
            "videotestsrc pattern=ball num-buffers={frames} \
             ! video/x-raw,format=I420,width=640,height=480,framerate={FPS}/1 \
             ! x264enc speed-preset=superfast bitrate=1000 key-int-max=60 ! tee name=t \
             t. ! queue ! h264parse ! matroskamux ! filesink location=\"{mkv}\" \
             t. ! queue ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! filesink location=\"{h264}\"",
            mkv = inputs.webcam_mkv.display(),
            h264 = inputs.webcam_h264.display(),
        );
        // Generous: encoding runs faster than real time even on two slow cores.
        let timeout = Duration::from_secs(60 + seconds * 3);
        encode_file(&movie, timeout).context("cannot generate the benchmark movie")?;
        encode_file(&webcam, timeout).context("cannot generate the benchmark webcam")?;
        Ok(inputs)
    }
}

/// Runs a finite GStreamer pipeline to its end.
fn encode_file(description: &str, timeout: Duration) -> anyhow::Result<()> {
    let pipeline = gst::parse::launch(description).with_context(|| {
        format!("invalid pipeline `{description}` (is gst-plugins-ugly installed?)")
    })?;
    let result = run_to_eos(&pipeline, timeout);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run_to_eos(pipeline: &gst::Element, timeout: Duration) -> anyhow::Result<()> {
    pipeline
        .set_state(gst::State::Playing)
        .context("the pipeline would not start")?;
    let bus = pipeline.bus().context("the pipeline has no bus")?;
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .with_context(|| format!("not done within {} s", timeout.as_secs()))?;
    match msg.view() {
        gst::MessageView::Error(e) => bail!("{}", e.error()),
        _ => Ok(()),
    }
}

/// The ffmpeg version (`5.1.9-0+deb12u1`), failing clearly when ffmpeg or libx264 is missing.
fn ffmpeg_version() -> anyhow::Result<String> {
    let out = match Command::new("ffmpeg").arg("-version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("ffmpeg is not installed (apt-get install ffmpeg)")
        }
        other => other.context("cannot run ffmpeg -version")?,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("--enable-libx264") {
        bail!("this ffmpeg is built without libx264, so it cannot be the reference");
    }
    let first = text.lines().next().unwrap_or_default();
    Ok(first
        .strip_prefix("ffmpeg version ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or(first)
        .to_string())
}

/// Runs `cowatch party` on the inputs for `seconds` after it goes live, then stops it the way
/// a user would (SIGTERM) and collects its bill.
fn run_cowatch(inputs: &Inputs, dir: &Path, seconds: u64) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("cannot locate the cowatch executable")?;
    let webcam = inputs.webcam_description();
    let spawned = Instant::now();
    let mut server = Server::start(
        Command::new(exe)
            .arg("party")
            .arg("--movie")
            .arg(&inputs.movie)
            .args([
                "--webcam",
                &webcam,
                "--mic",
                "none",
                "--layout",
                "side-panel",
            ])
            .args(["--bitrate", &BITRATE_KBPS.to_string()])
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn"),
        &dir.join("cowatch.stderr"),
    )?;
    let live = Instant::now();
    let first = Health::fetch(&server).context("cannot read /healthz after start")?;
    server.process.run_for(Duration::from_secs(seconds));
    let last = Health::fetch(&server).context("cannot read /healthz before stop")?;
    let out_s = live.elapsed().as_secs_f64();
    let usage = server.process.stop("cowatch")?;
    Ok(Measurement {
        contender: "cowatch",
        cpu_s: usage.cpu_s,
        out_s,
        wall_s: spawned.elapsed().as_secs_f64(),
        fps: last.video_frames.saturating_sub(first.video_frames) as f64
            / (last.at - first.at).as_secs_f64(),
        peak_rss_mib: usage.peak_rss_mib,
        note: last.problem(),
        threads: None,
    })
}

/// Runs the pipeline-only contender of a rendition row as a child of this benchmark and
/// collects its bill over the window it reports, after its start-up, in all and by thread.
/// Its resident memory after the rendition stopped again goes in the note of a running one.
fn run_branch(dir: &Path, seconds: u64, mode: BranchMode) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("cannot locate the cowatch executable")?;
    let spawned = Instant::now();
    let mode_arg = mode
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .context("a mode without a name")?;
    let mut child = Contender::spawn(
        Command::new(exe)
            .args(["bench", "pipeline", "--seconds", &seconds.to_string()])
            .args(["--branch-child", &mode_arg, "--branch-child-inputs"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped()),
        &dir.join(format!("branch-{mode_arg}.stderr")),
    )?;
    let lines = {
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout()?);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    };
    // The next line of the child, sampling its memory meanwhile.
    let next = |child: &mut Contender, within: Duration| -> anyhow::Result<String> {
        let until = Instant::now() + within;
        loop {
            match lines.try_recv() {
                Ok(line) => return Ok(line),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    bail!("it exited early: {}", child.last_words())
                }
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() > until => {
                    bail!("no word within {} s", within.as_secs())
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    child.run_for(Duration::from_millis(50))
                }
            }
        }
    };
    // CPU so far: the whole process, the main encode's threads, the branch's threads.
    let sample = |child: &Contender| -> anyhow::Result<[f64; 3]> {
        let mut main = 0.0;
        for prefix in MAIN_ENCODE_THREADS {
            main += child.threads_cpu_seconds(prefix)?;
        }
        let branch = match mode.branch_thread() {
            Some(prefix) => child.threads_cpu_seconds(prefix)?,
            None => 0.0,
        };
        Ok([child.cpu_seconds()?, main, branch])
    };
    let line = next(&mut child, Duration::from_secs(60))?;
    if line != "live" {
        bail!("expected `live`, got `{line}`");
    }
    let (live, at_live) = (Instant::now(), sample(&child)?);
    let line = next(&mut child, Duration::from_secs(seconds) + STOP_TIMEOUT)?;
    let at_done = sample(&child)?;
    let out_s = live.elapsed().as_secs_f64();
    let [cpu_s, main_s, branch_s] = [0, 1, 2].map(|i| at_done[i] - at_live[i]);
    let frames: Vec<u64> = line
        .strip_prefix("done ")
        .map(|rest| rest.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let [main_frames, branch_frames] = frames[..] else {
        bail!("expected `done MAIN BRANCH`, got `{line}`");
    };
    let mut notes = Vec::new();
    let branch_fps = branch_frames as f64 / out_s;
    if let Some((codec, name)) = mode.rendition() {
        notes.push(format!(
            "{codec} {name} {branch_fps:.2} frames/s, threads: branch {:.3}, main encode {:.3} cpu_s/out_s",
            branch_s / out_s,
            main_s / out_s
        ));
        if branch_fps < f64::from(FPS) * 0.95 {
            notes.push(format!(
                "{codec} {name} frames dropped: the encoder fell behind"
            ));
        }
        let before = child.rss_kib().unwrap_or(0);
        if next(&mut child, STOP_TIMEOUT)? == "off" {
            // What stays resident once the rendition is idle again.
            child.run_for(Duration::from_secs(2));
            let after = child.rss_kib().unwrap_or(0);
            notes.push(format!(
                "RSS {:.1} MiB on, {:.1} MiB after off",
                before as f64 / 1024.0,
                after as f64 / 1024.0
            ));
        }
    } else if branch_frames > 0 {
        notes.push(format!("idle renditions encoded {branch_frames} frames"));
    }
    let usage = child.wait(STOP_TIMEOUT)?;
    if !usage.success {
        bail!("exited with {}: {}", usage.status, child.last_words());
    }
    Ok(Measurement {
        contender: mode.contender(),
        cpu_s,
        out_s,
        wall_s: spawned.elapsed().as_secs_f64(),
        fps: main_frames as f64 / out_s,
        peak_rss_mib: usage.peak_rss_mib,
        note: (!notes.is_empty()).then(|| notes.join(", ")),
        threads: Some(Threads {
            main_encode: main_s / out_s,
            branch: branch_s / out_s,
        }),
    })
}

/// A rendition row's contender: the party's pipeline alone (no web server, no viewers) on the
/// inputs, with `mode`'s rendition running. Says `live` once past start-up, `done MAIN
/// BRANCH` (frames encoded by the main encode and by all on-demand ones in between) after
/// `seconds`; with a rendition running, stops it, says `off` and stays two more seconds for
/// its memory to be read.
fn branch_child(mode: BranchMode, inputs: &Inputs, seconds: u64) -> anyhow::Result<()> {
    use crate::pipeline::ladder::Ladder;
    use crate::pipeline::layout::Layout;
    use crate::pipeline::presets::EncoderPreset;
    use crate::pipeline::source::{MicSource, MovieSource, WebcamSource};
    use crate::pipeline::{Pipeline, PipelineState, Settings};

    let ladder = match mode {
        BranchMode::Before => {
            // The one-rung ladder with a VP8 fallback builds what the pipeline was before.
            let dir = inputs.movie.with_file_name("before-ladder");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join("ladder.toml"),
                "fallback_encoders = [\"vp8\"]\n[[rendition]]\nname = \"720p\"\nheight = 720\n",
            )?;
            Ladder::load(&dir)?
        }
        _ => Ladder::builtin()?,
    };
    let movie = inputs.movie.to_string_lossy();
    let pipeline = Pipeline::start(Settings {
        movie: MovieSource::parse(&movie)?,
        loop_movie: false,
        webcam: WebcamSource::Description(inputs.webcam_description()),
        mic: MicSource::None,
        layout: Layout::builtin("side-panel").context("no built-in side-panel layout")?,
        layouts: Default::default(),
        encoder: EncoderPreset::builtin("h264")?,
        bitrate_kbps: BITRATE_KBPS,
        ladder,
        duck_db: crate::pipeline::DEFAULT_DUCK_DB,
        record: None,
        timecode: false,
    })?;
    let rendition = match mode.rendition() {
        Some((codec, name)) => Some(
            pipeline
                .rendition_id(codec, name)
                .with_context(|| format!("the pipeline has no {codec} {name} rendition"))?,
        ),
        None => None,
    };
    let frames = || {
        let h = pipeline.health();
        let on_demand = h.renditions.iter().filter(|r| r.on_demand);
        (
            h.output.video_frames,
            on_demand.map(|r| r.frames).sum::<u64>(),
        )
    };
    let started = Instant::now();
    while pipeline.health().state != PipelineState::Live || frames().0 == 0 {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the pipeline did not go live within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(id) = rendition {
        pipeline.set_rendition_active(id, true)?;
    }
    // A second for the encoders to settle, so the window shows the steady state.
    std::thread::sleep(Duration::from_secs(1));
    let before = frames();
    println!("live");
    std::thread::sleep(Duration::from_secs(seconds));
    let after = frames();
    println!("done {} {}", after.0 - before.0, after.1 - before.1);
    if let Some(id) = rendition {
        pipeline.set_rendition_active(id, false)?;
        println!("off");
        std::thread::sleep(Duration::from_secs(3));
    }
    block_on(async {
        pipeline.shutdown().await;
        Ok(())
    })
}

/// The part of `/healthz` the benchmark needs.
struct Health {
    /// When it was read.
    at: Instant,
    /// `output.video_frames`.
    video_frames: u64,
    /// `webcam`: anything but `live` means the webcam was not composited.
    webcam: String,
    /// `movie.state`: anything but `playing` means the movie was not decoded.
    movie: String,
}

impl Health {
    /// Reads `/healthz`.
    fn fetch(server: &Server) -> anyhow::Result<Self> {
        let json = block_on(server.health())?;
        let at = Instant::now();
        let text = |pointer: &str| {
            json.pointer(pointer)
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        };
        Ok(Self {
            at,
            video_frames: json
                .pointer("/output/video_frames")
                .and_then(serde_json::Value::as_u64)
                .context("/healthz has no output.video_frames")?,
            webcam: text("/webcam").to_string(),
            movie: text("/movie/state").to_string(),
        })
    }

    /// What made this run do less than the full work, if anything.
    fn problem(&self) -> Option<String> {
        let mut problems = Vec::new();
        if self.webcam != "live" {
            problems.push(format!("webcam {}", self.webcam));
        }
        if self.movie != "playing" {
            problems.push(format!("movie {}", self.movie));
        }
        (!problems.is_empty()).then(|| problems.join(", "))
    }
}

/// The same composite in ffmpeg: canvas colour, chat panel and webcam border drawn on a
/// generated background, the movie letterboxed into the left 960x720, the webcam centre-cropped
/// to the inner 316x176 of its border.
fn filter_graph() -> String {
    let (w, h) = CANVAS;
    [
        format!(
            "color=c=0x0e0e10:s={w}x{h}:r={FPS},format=yuv420p,\
             drawbox=x=960:y=180:w=320:h=540:color=0x18181b:t=fill,\
             drawbox=x=960:y=0:w=320:h=180:color=0x9146ff:t=fill[bg]"
        ),
        "[0:v]scale=960:540,setsar=1[movie]".to_string(),
        "[1:v]crop='min(iw,ih*316/176)':'min(ih,iw*176/316)',scale=316:176,setsar=1[cam]"
            .to_string(),
        "[bg][movie]overlay=x=0:y=90:eof_action=endall:shortest=1[base]".to_string(),
        "[base][cam]overlay=x=962:y=2:eof_action=endall:shortest=1,format=yuv420p[v]".to_string(),
    ]
    .join(";")
}

/// Runs ffmpeg on the inputs in real time (`-re`) for `seconds` of output.
fn run_ffmpeg(inputs: &Inputs, dir: &Path, seconds: u64) -> anyhow::Result<Measurement> {
    let stderr_path = dir.join("ffmpeg.stderr");
    let bitrate = format!("{BITRATE_KBPS}k");
    let spawned = Instant::now();
    let mut child = Contender::spawn(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            // Progress on stdout carries the frame count, the one thing -f null hides.
            .args(["-nostats", "-progress", "pipe:1"])
            .arg("-re")
            .arg("-i")
            .arg(&inputs.movie)
            .arg("-re")
            .arg("-i")
            .arg(&inputs.webcam_mkv)
            .args(["-filter_complex", &filter_graph()])
            .args(["-t", &seconds.to_string(), "-map", "[v]", "-map", "0:a"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-b:v", &bitrate, "-maxrate", &bitrate, "-bufsize", &bitrate])
            .args(["-g", "60", "-profile:v", "baseline", "-pix_fmt", "yuv420p"])
            .args([
                "-c:a", "libopus", "-b:a", "128k", "-ar", "48000", "-ac", "2",
            ])
            .args(["-f", "null", "-"])
            .stdout(Stdio::piped()),
        &stderr_path,
    )?;
    let stdout = child.stdout()?;
    let frames = std::thread::spawn(move || last_frame_count(stdout));
    let usage = child.wait(Duration::from_secs(seconds) + STOP_TIMEOUT)?;
    let wall_s = spawned.elapsed().as_secs_f64();
    if !usage.success {
        bail!(
            "ffmpeg exited with {}: {}",
            usage.status,
            child.last_words()
        );
    }
    let frames = frames
        .join()
        .map_err(|_| anyhow::anyhow!("the ffmpeg progress reader panicked"))?
        .context("ffmpeg reported no progress")?;
    let out_s = seconds as f64;
    Ok(Measurement {
        contender: "ffmpeg",
        cpu_s: usage.cpu_s,
        out_s,
        wall_s,
        fps: frames as f64 / out_s,
        peak_rss_mib: usage.peak_rss_mib,
        note: None,
        threads: None,
    })
}

/// The last `frame=N` of ffmpeg's `-progress` output.
fn last_frame_count(stdout: ChildStdout) -> Option<u64> {
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix("frame=")?.trim().parse().ok())
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_graph_places_every_layer() {
        let graph = filter_graph();
        for part in [
            "overlay=x=0:y=90",
            "overlay=x=962:y=2",
            "scale=316:176",
            "s=1280x720",
        ] {
            assert!(graph.contains(part), "{part} missing from {graph}");
        }
    }
}
