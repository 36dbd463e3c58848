//! A machine-readable clock stamped into every composite frame, for glass-to-glass latency:
//! the viewer decodes it from the picture it displays and compares with its own clock (same
//! machine, same clock).
//!
//! The strip sits in the top-left corner: [`BITS`] blocks of [`BLOCK`]×[`BLOCK`] luma pixels,
//! black for 0 and white for 1, most significant bit first, carrying the wall-clock time in
//! milliseconds modulo 2^[`BITS`] (about 12 days: plenty to subtract two nearby times).

use gstreamer as gst;
use gstreamer_video as gst_video;

use gst::prelude::*;
use gst_video::prelude::*;

/// Bits in the strip.
pub const BITS: u32 = 40;

/// Block size in pixels: large enough to survive H.264 at low bitrates.
pub const BLOCK: u32 = 16;

/// Milliseconds since the UNIX epoch, modulo 2^BITS.
pub fn now_ms() -> u64 {
    // The wall clock, not a monotonic one: the page reading the strip compares it with its
    // own `Date.now()`.
    crate::util::clock::unix_ms() as u64 & ((1u64 << BITS) - 1)
}

/// Stamps every buffer leaving `pad` (raw I420) with the current time.
pub fn stamp_on(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(buffer) = info.buffer_mut() {
            let buffer = buffer.make_mut();
            if let Ok(mut frame) =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &vinfo)
            {
                stamp(&mut frame, now_ms());
            }
        }
        gst::PadProbeReturn::Ok
    });
}

fn stamp(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, value: u64) {
    let width = frame.width();
    let height = frame.height();
    if width < BITS * BLOCK || height < BLOCK {
        return;
    }
    let stride = frame.plane_stride()[0] as usize;
    let Ok(luma) = frame.plane_data_mut(0) else {
        return;
    };
    for bit in 0..BITS {
        let on = value >> (BITS - 1 - bit) & 1 == 1;
        let level = if on { 235 } else { 16 };
        let x0 = (bit * BLOCK) as usize;
        for y in 0..BLOCK as usize {
            let row = y * stride;
            luma[row + x0..row + x0 + BLOCK as usize].fill(level);
        }
    }
    // Neutral chroma under the strip, so colour bleeding cannot shift the luma read back.
    for plane in 1..3 {
        let stride = frame.plane_stride()[plane] as usize;
        let Ok(chroma) = frame.plane_data_mut(plane as u32) else {
            return;
        };
        for y in 0..(BLOCK / 2) as usize {
            let row = y * stride;
            chroma[row..row + (BITS * BLOCK / 2) as usize].fill(128);
        }
    }
}

/// Reads the strip back from an RGB picture (for tests and tools).
pub fn read_rgb(rgb: &[u8], width: u32, height: u32) -> Option<u64> {
    if width < BITS * BLOCK || height < BLOCK {
        return None;
    }
    let mut value = 0u64;
    for bit in 0..BITS {
        let x = bit * BLOCK + BLOCK / 2;
        let y = BLOCK / 2;
        let i = ((y * width + x) * 3) as usize;
        let luma = (u32::from(rgb[i]) + u32::from(rgb[i + 1]) + u32::from(rgb[i + 2])) / 3;
        value = value << 1 | u64::from(luma > 128);
    }
    Some(value)
}
