//! The media types the elements pass between them, defined once.
//!
//! - `audio/x-npuwhisper-mel, n-mels=(int), frames=(int)3000, format=F32LE`: one buffer is one
//!   window's log-mel spectrogram, `n_mels × 3000` f32 mel-major; PTS and duration are those of
//!   the audio the window covers (the frames past it are padding).
//! - `application/x-npuwhisper-states, width=(int), frames=(int)1500, format=F32LE`: one buffer is
//!   one window's encoder states, `n × width` f32 with `n` up to `frames` (fewer when the window
//!   was encoded over a shorter context, `npuwhisperenc context=auto|fit`), with the window's PTS
//!   and duration. A buffer of fewer than `frames` rows carries the window's log-mel
//!   (`n_mels × 3000` f32, as the mel buffer) as a second memory, for the decoder to encode the
//!   window again over the full context.

use npuwhisper_core::model::{ENCODER_FRAMES, MAX_D_MODEL, MAX_N_MELS, MEL_FRAMES};

pub const MEL: &str = "audio/x-npuwhisper-mel";
pub const STATES: &str = "application/x-npuwhisper-states";

/// Mel window caps; `None` leaves the mel bin count open.
pub fn mel(n_mels: Option<usize>) -> gst::Caps {
    let b = gst::Caps::builder(MEL);
    let b = match n_mels {
        Some(n) => b.field("n-mels", n as i32),
        None => b.field("n-mels", gst::IntRange::new(1i32, MAX_N_MELS as i32)),
    };
    b.field("frames", MEL_FRAMES as i32).field("format", "F32LE").build()
}

/// Encoder state caps; `None` leaves the width open.
pub fn states(width: Option<usize>) -> gst::Caps {
    let b = gst::Caps::builder(STATES);
    let b = match width {
        Some(w) => b.field("width", w as i32),
        None => b.field("width", gst::IntRange::new(1i32, MAX_D_MODEL as i32)),
    };
    b.field("frames", ENCODER_FRAMES as i32)
        .field("format", "F32LE")
        .build()
}

pub fn text() -> gst::Caps {
    gst::Caps::builder("text/x-raw").field("format", "utf8").build()
}

/// The always `sink` and `src` pad templates of a one-in, one-out element.
pub fn sink_src_templates(sink: &gst::Caps, src: &gst::Caps) -> Vec<gst::PadTemplate> {
    [
        ("sink", gst::PadDirection::Sink, sink),
        ("src", gst::PadDirection::Src, src),
    ]
    .into_iter()
    .map(|(name, dir, caps)| {
        gst::PadTemplate::new(name, dir, gst::PadPresence::Always, caps).expect("static pad template is valid")
    })
    .collect()
}
