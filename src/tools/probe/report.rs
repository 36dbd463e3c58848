//! `cowatch probe` on the command line: one probe, its report as a table, and a failure when
//! a viewer would have seen no picture.

use std::time::Duration;

use anyhow::{Context, bail};

use super::{CONNECT_TIMEOUT, ProbeOptions, ProbeReport, probe, whep};

/// Options of `cowatch probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The WHEP endpoint, e.g. http://127.0.0.1:8080/whep.
    pub url: String,
    /// How long to watch.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Offer only this video codec, as a browser without the other one does [default: both].
    #[arg(long, value_enum)]
    pub codec: Option<super::VideoCodec>,
}

/// Runs the probe against the URL for the seconds given and prints its report.
///
/// Fails (after printing what it measured) when the server refuses the offer or when no
/// keyframe arrived, because a viewer in either situation never sees a picture.
pub fn main(args: ProbeArgs) -> anyhow::Result<()> {
    let ProbeArgs {
        url,
        seconds,
        codec,
    } = args;
    let url = url.as_str();
    // A URL the probe cannot use is the whole answer; no header line before it.
    whep::parse_url(url)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let options = ProbeOptions {
        url: url.to_owned(),
        duration: Duration::from_secs(seconds),
        codec,
    };
    println!("probe {url} for {seconds} s");
    let report = runtime.block_on(probe(&options))?;
    if !(200..300).contains(&report.status) {
        bail!(
            "server answered {}: {}",
            report.status,
            report.reason.as_deref().unwrap_or("(no reason given)")
        );
    }
    print!("{}", render(&report));
    if report.time_to_first_keyframe_ms.is_none() {
        if !report.connected {
            bail!(
                "no keyframe: the WebRTC connection (ICE/DTLS) did not come up within {} s",
                CONNECT_TIMEOUT.min(options.duration).as_secs_f64()
            );
        }
        if report.video_packets == 0 {
            bail!("no video arrived within {seconds} s (no keyframe, no packets)");
        }
        bail!(
            "no keyframe arrived within {seconds} s ({} video packets, none starting a keyframe)",
            report.video_packets
        );
    }
    Ok(())
}

/// The human table [`main`] prints.
fn render(report: &ProbeReport) -> String {
    let codec = report
        .video_codec
        .as_deref()
        .map(|mime| mime.strip_prefix("video/").unwrap_or(mime))
        .unwrap_or("none");
    let keyframe = match report.time_to_first_keyframe_ms {
        Some(t) => format!("{t:.1} ms after POST"),
        None => "none".to_owned(),
    };
    let sizes: Vec<String> = report
        .sizes
        .iter()
        .map(|c| format!("{}x{} from {:.1} s", c.width, c.height, c.at_ms / 1000.0))
        .collect();
    let sizes = if sizes.is_empty() {
        "none".to_owned()
    } else {
        sizes.join(", ")
    };
    let freeze = report.longest_freeze_ms.map_or("-".to_owned(), |ms| {
        if ms < 100.0 {
            "none over 100 ms".to_owned()
        } else {
            format!("{ms:.0} ms")
        }
    });
    format!(
        "  answer in          {:.1} ms\n  \
         first keyframe     {keyframe}\n  \
         video              {codec}, {} packets, {} bytes\n  \
         picture            {sizes}\n  \
         frames whole       {} (longest freeze {freeze})\n  \
         audio              {} packets\n  \
         received           {:.0} kbit/s (audio + video)\n  \
         keyframes seen     {}\n  \
         packets lost       {}\n",
        report.post_to_answer_ms,
        report.video_packets,
        report.video_bytes,
        report.frames_shown,
        report.audio_packets,
        report.bitrate_kbps,
        report.keyframes,
        report.packets_lost,
    )
}
