//! `npuwhisper`: speech-to-text bin, raw audio in, timed UTF-8 text out.
//!
//! Internally `audioconvert ! audioresample ! npumel ! queue ! npuwhisperenc ! queue !
//! npuwhisperdec`. The queues hold at most two windows each and let the spectrogram, encoder
//! and decoder of different windows run on different cores.
//!
//! Its properties are those of `npuwhisperdec` (see there: model, precision, threads,
//! language, language-code, task, beam search, temperature fallback, initial prompt, word
//! timestamps, batch size, messages), forwarded to it; `model`, `precision` and `threads` go
//! to `npuwhisperenc` too, and `context` (the encoder frames per window) to it alone. `latency`
//! and `lateness` (see Live streams) and `passthrough` are the bin's own. The children's other properties are reachable by name, e.g.
//! `npuwhisper mel::min-pause=300`.
//!
//! ## Live streams
//!
//! When upstream is live (a capture device, a network stream), the bin answers the LATENCY
//! query with upstream's latency plus its `latency` property (ms, default 3000) and keeps to
//! it: `npumel` sends the growing window again every `live-step` and the decoder emits a word
//! once two passes agree on it, or once it ends `live-hold` before a pass does (see
//! `live.rs`). Shorter latencies mean fewer passes per word and less accurate text; below the
//! model's `min-latency` (read-only; tiny.en 1500 ms, base 2000 ms) the latency is raised to
//! it, with a warning. `lateness` (ms, default 0) is added to the timestamps of the text and
//! gaps, for text that would otherwise come out too late. Text leaving later than the latency
//! (plus lateness) allows gets one element warning per stream.
//!
//! `language-code` takes a BCP 47 tag ("en-US") and sets `language` to its primary subtag.
//! With these, the bin is a drop-in transcriber for gst-plugins-rs `transcriberbin`
//! (`transcriberbin transcriber=npuwhisper`, see `interop/tests/transcriberbin.rs`).
//!
//! ## Passthrough
//!
//! With `passthrough=true` (set in NULL or READY) the src pad carries the audio as it came in
//! (same caps, buffers and timestamps) and the transcript only goes on the bus, as the
//! decoder's `npuwhisper-phrase` / `npuwhisper-word` element messages (`post-messages`, on by
//! default): inside, a `tee` sends the audio to the src pad and, through a queue, to the
//! transcription chain, whose text ends in a fakesink. The audio is not held back: on a live
//! stream the bin then adds nothing to the LATENCY answer (the text still keeps to `latency`).
//! Transcription that cannot keep up holds the audio up once the queue (10 s) is full.
//!
//! ## Progress
//!
//! When upstream answers a duration query (a file, not a live source), the bin tells how much
//! of the stream has been transcribed: the stream time up to which the audio has been decoded
//! into text (not merely read), over the duration. In PLAYING, at most five times a second and
//! each time it moved, it posts two messages:
//!
//! - a `GST_MESSAGE_PROGRESS` with code `transcribe`, type `Start` the first time and
//!   `Continue` after, text like `57 % (0:01:23 of 0:02:24)` (`gst-launch-1.0` prints it) and
//!   the whole percent, rounded down and below 100, in its `percent` field (`G_TYPE_INT`);
//! - an element message `npuwhisper-progress` with fields `percent` (`G_TYPE_DOUBLE`, 0 to
//!   100), `position` and `duration` (`guint64` nanoseconds, stream time).
//!
//! At EOS the same two with type `Complete`, `percent` 100 and `position` = `duration`. Going
//! back to READY before that posts a progress message of type `Canceled`. After a flushing seek
//! the position starts again from where the stream resumes.
//!
//! ## Caps
//!
//! - sink: `audio/x-raw` (any format, rate and channel count: converted to 16 kHz mono)
//! - src: `text/x-raw, format=utf8`, one buffer per phrase, or per word with `word-timestamps`;
//!   in passthrough mode the `audio/x-raw` that came in
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=talk.ogg ! decodebin ! npuwhisper model=small.en ! \
//!     srtenc ! filesink location=talk.srt
//! ```
use gst::glib;
use gst::prelude::*;

mod imp;
mod live;
mod progress;

glib::wrapper! {
    pub struct NpuWhisperBin(ObjectSubclass<imp::NpuWhisperBin>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "npuwhisper",
        gst::Rank::NONE,
        NpuWhisperBin::static_type(),
    )
}
