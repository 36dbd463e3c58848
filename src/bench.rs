//! Benchmarks printed as tables.

/// Composite + encode cost against ffmpeg.
pub fn pipeline(_seconds: u64, _runs: usize) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
