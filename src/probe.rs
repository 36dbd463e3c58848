//! `cowatch probe`: a headless viewer built on webrtc-rs, an independent WebRTC stack.

/// Runs the probe against `url` for `seconds` and prints its report.
pub fn main(_url: &str, _seconds: u64) -> anyhow::Result<()> {
    anyhow::bail!("the probe is not built yet")
}
