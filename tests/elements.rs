//! Element-level tests of the GStreamer glue. The ones needing the real model live elsewhere;
//! here only the model-less behaviour (npumel, model loading errors, bin construction).

mod common;

use std::path::PathBuf;
use std::sync::Once;

use common::ready_error;
use gst::prelude::*;
use gst_check::Harness;

const RATE: u64 = 16000;
const BUFFER_SAMPLES: usize = 1024;
const MEL_CAPS_80: &str = "audio/x-npuwhisper-mel,n-mels=80,frames=3000,format=F32LE";

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstnpuwhisper::plugin_register_static().expect("registering the plugin");
    });
}

/// 440 Hz bursts of 2 s separated by 0.5 s of silence.
fn tone_bursts(seconds: u64) -> Vec<f32> {
    (0..seconds * RATE)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            if t % 2.5 < 2.0 {
                (0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32
            } else {
                0.0
            }
        })
        .collect()
}

fn sample_time(n: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(n * 1_000_000_000 / RATE)
}

/// npumel with the energy gate: these tests are about windows, passes and caps on synthetic
/// tones, which a voice activity detector rightly takes for no speech (tests/vad.rs tests it).
fn energy_npumel() -> Harness {
    let mel = gst::ElementFactory::make("npumel")
        .property_from_str("vad", "energy")
        .build()
        .unwrap();
    Harness::with_element(&mel, Some("sink"), Some("src"))
}

/// Pushes `samples` through npumel in timestamped buffers, then EOS; returns the windows.
fn run_npumel(format: &str, sink_caps: Option<&str>, samples: &[f32], to_bytes: fn(&[f32]) -> Vec<u8>) -> Mel {
    let mut h = energy_npumel();
    // Windows as for a file: no provisional passes.
    h.set_live(false);
    if let Some(caps) = sink_caps {
        h.set_sink_caps_str(caps);
    }
    h.set_src_caps_str(&format!(
        "audio/x-raw,format={format},rate=16000,channels=1,layout=interleaved"
    ));

    let mut seen = 0u64;
    for chunk in samples.chunks(BUFFER_SAMPLES) {
        let mut buffer = gst::Buffer::from_mut_slice(to_bytes(chunk));
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(sample_time(seen));
            b.set_duration(sample_time(seen + chunk.len() as u64) - sample_time(seen));
        }
        seen += chunk.len() as u64;
        h.push(buffer).expect("pushing audio");
    }
    assert!(h.push_event(gst::event::Eos::new()));

    let mut windows = Vec::new();
    while let Some(b) = h.try_pull() {
        windows.push(b);
    }
    let mut gaps = Vec::new();
    while let Some(ev) = h.try_pull_event() {
        if let gst::EventView::Gap(g) = ev.view() {
            let (pts, duration) = g.get();
            gaps.push((pts, duration.expect("gap without duration")));
        }
    }
    let caps = h
        .sinkpad()
        .and_then(|p| p.current_caps())
        .expect("npumel negotiated no output caps");
    Mel { windows, gaps, caps }
}

/// What npumel output: spectrogram windows, gaps for windows without speech, the caps.
struct Mel {
    windows: Vec<gst::Buffer>,
    gaps: Vec<(gst::ClockTime, gst::ClockTime)>,
    caps: gst::Caps,
}

impl Mel {
    fn n_mels(&self) -> i32 {
        self.caps.structure(0).unwrap().get::<i32>("n-mels").unwrap()
    }
}

fn f32le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn s16le(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s * 32767.0).round() as i16).to_le_bytes())
        .collect()
}

/// At least two windows of the negotiated size, in order, from 0; with the gaps they tile
/// `total`.
fn check_windows(mel: &Mel, n_mels: usize, total: gst::ClockTime) {
    let windows = &mel.windows;
    assert!(windows.len() >= 2, "expected at least 2 windows, got {}", windows.len());
    assert_eq!(windows[0].pts(), Some(gst::ClockTime::ZERO));

    let mut previous: Option<gst::ClockTime> = None;
    let mut sum = gst::ClockTime::ZERO;
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w.size(), n_mels * 3000 * 4, "window {i} size");
        let pts = w.pts().expect("window without PTS");
        if let Some(p) = previous {
            assert!(pts > p, "window {i} PTS {pts} not after {p}");
        }
        previous = Some(pts);
        let duration = w.duration().expect("window without duration");
        assert!(
            duration <= gst::ClockTime::from_seconds(30),
            "window {i} lasts {duration}"
        );
        assert!(!duration.is_zero(), "window {i} is empty");
        sum += duration;
    }
    for (_, duration) in &mel.gaps {
        sum += *duration;
    }
    let diff = sum.nseconds().abs_diff(total.nseconds());
    assert!(
        diff <= gst::ClockTime::MSECOND.nseconds(),
        "windows and gaps sum to {sum}, expected {total}"
    );
}

#[test]
fn npumel_windows_f32() {
    init();
    let audio = tone_bursts(45);
    let mel = run_npumel("F32LE", Some(MEL_CAPS_80), &audio, f32le);
    assert_eq!(mel.n_mels(), 80);
    check_windows(&mel, 80, gst::ClockTime::from_seconds(45));

    // Windows and gaps abut: each starts where the previous ended.
    let mut spans: Vec<(gst::ClockTime, gst::ClockTime)> = mel
        .windows
        .iter()
        .map(|w| (w.pts().unwrap(), w.duration().unwrap()))
        .chain(mel.gaps.iter().copied())
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert_eq!(pair[0].0 + pair[0].1, pair[1].0);
    }

    // The values are a log-mel spectrogram: finite, with Whisper's (x + 4) / 4 scaling.
    let map = mel.windows[0].map_readable().unwrap();
    let values: Vec<f32> = map
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(values.iter().all(|v| v.is_finite() && (-2.0..=3.0).contains(v)));
}

#[test]
fn npumel_windows_s16() {
    init();
    let audio = tone_bursts(45);
    let mel = run_npumel("S16LE", Some(MEL_CAPS_80), &audio, s16le);
    check_windows(&mel, 80, gst::ClockTime::from_seconds(45));
}

#[test]
fn npumel_n_mels_from_downstream() {
    init();
    let audio = tone_bursts(5);
    // Downstream open: Whisper's usual 80.
    let mel = run_npumel("F32LE", None, &audio, f32le);
    assert_eq!(mel.n_mels(), 80);
    assert!(!mel.windows.is_empty());
    assert!(mel.windows.iter().all(|w| w.size() == 80 * 3000 * 4));

    // Downstream asking for large-v3's 128.
    let mel = run_npumel(
        "F32LE",
        Some("audio/x-npuwhisper-mel,n-mels=128,frames=3000,format=F32LE"),
        &audio,
        f32le,
    );
    assert_eq!(mel.n_mels(), 128);
    assert!(mel.windows.iter().all(|w| w.size() == 128 * 3000 * 4));
}

#[test]
fn npumel_silence_is_a_gap() {
    init();
    // 8 s of silence, then 2 s of tone: the silence is not worth decoding.
    let mut audio = vec![0.0f32; 8 * RATE as usize];
    audio.extend(tone_bursts(2));
    let mel = run_npumel("F32LE", Some(MEL_CAPS_80), &audio, f32le);
    assert!(!mel.gaps.is_empty(), "no gap for the silence");
    assert_eq!(mel.gaps[0].0, gst::ClockTime::ZERO);
    let last = mel.windows.last().expect("no window for the tone");
    assert_eq!(
        last.pts().unwrap() + last.duration().unwrap(),
        gst::ClockTime::from_seconds(10)
    );
}

#[test]
fn npumel_discont_restarts_window() {
    init();
    let mut h = energy_npumel();
    h.set_live(false);
    // The harness says it is live: keep windows as long as for a file.
    h.element().unwrap().set_property("live-max-window", 30_000u32);
    h.set_sink_caps_str(MEL_CAPS_80);
    h.set_src_caps_str("audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved");

    let audio = tone_bursts(4);
    let push = |h: &mut Harness, pts: gst::ClockTime, chunk: &[f32]| {
        let mut buffer = gst::Buffer::from_mut_slice(f32le(chunk));
        buffer.get_mut().unwrap().set_pts(pts);
        h.push(buffer).unwrap();
    };
    // 2 s from 0, then 2 s from 100 s: a jump, so the first 2 s close a window.
    for (i, chunk) in audio[..32000].chunks(BUFFER_SAMPLES).enumerate() {
        push(&mut h, sample_time((i * BUFFER_SAMPLES) as u64), chunk);
    }
    let jump = gst::ClockTime::from_seconds(100);
    for (i, chunk) in audio[32000..].chunks(BUFFER_SAMPLES).enumerate() {
        push(&mut h, jump + sample_time((i * BUFFER_SAMPLES) as u64), chunk);
    }
    assert!(h.push_event(gst::event::Eos::new()));

    let first = h.try_pull().expect("window before the jump");
    let second = h.try_pull().expect("window after the jump");
    assert!(h.try_pull().is_none());
    assert_eq!(first.pts(), Some(gst::ClockTime::ZERO));
    assert_eq!(first.duration(), Some(gst::ClockTime::from_seconds(2)));
    assert_eq!(second.pts(), Some(jump));
    assert_eq!(second.duration(), Some(gst::ClockTime::from_seconds(2)));
    assert!(second.flags().contains(gst::BufferFlags::DISCONT));
}

/// A live npumel (energy detector, a pass a second) and 4.5 s of tone (no pause), then 4 s of
/// silence.
fn live_tone_then_silence() -> (Harness, Vec<f32>) {
    let mut h = energy_npumel();
    h.set_live(true);
    h.element().unwrap().set_property("live-step", 1000u32);
    h.set_sink_caps_str(MEL_CAPS_80);
    h.set_src_caps_str("audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved");
    let mut audio: Vec<f32> = (0..72_000).map(|i| 0.5 * (i as f32 * 0.17).sin()).collect();
    audio.extend(vec![0.0; 64_000]);
    (h, audio)
}

/// Live: the growing window goes out again every `live-step` as a provisional (DROPPABLE)
/// pass from the same start, then once complete, unflagged; silence goes out as gaps soon.
#[test]
fn npumel_live_sends_growing_passes() {
    init();
    let (mut h, audio) = live_tone_then_silence();
    for (i, chunk) in audio.chunks(1600).enumerate() {
        let mut buffer = gst::Buffer::from_mut_slice(f32le(chunk));
        buffer.get_mut().unwrap().set_pts(sample_time(i as u64 * 1600));
        h.push(buffer).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        out.push(b);
    }
    let (passes, complete): (Vec<_>, Vec<_>) = out
        .iter()
        .partition(|b| b.flags().contains(gst::BufferFlags::DROPPABLE));
    let seconds = |b: &&gst::Buffer| b.duration().unwrap().seconds_f64();
    let lengths: Vec<f64> = passes.iter().map(seconds).collect();
    println!(
        "passes {lengths:?}, complete {:?}",
        complete.iter().map(seconds).collect::<Vec<_>>()
    );
    assert!(passes.len() >= 4, "a pass every second of speech: {lengths:?}");
    assert!(
        passes.iter().all(|b| b.pts() == Some(gst::ClockTime::ZERO)),
        "passes grow from the window start"
    );
    assert!(
        lengths.windows(2).all(|w| w[1] >= w[0] + 0.99),
        "each pass 1 s longer: {lengths:?}"
    );
    assert_eq!(complete.len(), 1, "one complete window");
    assert!(!complete[0].flags().contains(gst::BufferFlags::DROPPABLE));
    assert!(
        (4.5..=6.5).contains(&seconds(&complete[0])),
        "the window ends in the silence after the tone"
    );
    // The rest of the silence: gaps, none much longer than a step.
    let mut gaps = Vec::new();
    while let Some(ev) = h.try_pull_event() {
        if let gst::EventView::Gap(g) = ev.view() {
            gaps.push(g.get().1.unwrap().seconds_f64());
        }
    }
    // The first holds the silence that closed the window (2 s after the tone, less a margin).
    assert!(
        !gaps.is_empty() && gaps.iter().all(|&g| g <= 2.0),
        "silence in short gaps: {gaps:?}"
    );
}

/// Flow control: once downstream reports passes done (`npuwhisper-pass-done` upstream), a new
/// pass waits until the last one is done, then covers all the audio since.
#[test]
fn npumel_live_waits_for_the_pass_in_flight() {
    init();
    let mut h = energy_npumel();
    h.set_live(true);
    h.set_sink_caps_str(MEL_CAPS_80);
    h.set_src_caps_str("audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved");
    let tone: Vec<f32> = (0..16_000 * 8).map(|i| 0.5 * (i as f32 * 0.17).sin()).collect();
    let mut pushed = 0;
    let mut push_seconds = |h: &mut Harness, seconds: usize| {
        for chunk in tone[pushed..pushed + seconds * 16_000].chunks(1600) {
            let mut buffer = gst::Buffer::from_mut_slice(f32le(chunk));
            buffer.get_mut().unwrap().set_pts(sample_time(pushed as u64));
            pushed += chunk.len();
            h.push(buffer).unwrap();
        }
    };
    let done = |h: &mut Harness, end: gst::ClockTime| {
        let s = gst::Structure::builder("npuwhisper-pass-done")
            .field("end", end)
            .build();
        assert!(h.push_upstream_event(gst::event::CustomUpstream::new(s)));
    };
    let pull_lengths = |h: &mut Harness| {
        let mut v = Vec::new();
        while let Some(b) = h.try_pull() {
            v.push(b.duration().unwrap().seconds_f64());
        }
        v
    };
    push_seconds(&mut h, 1);
    assert_eq!(pull_lengths(&mut h), vec![1.0]);
    // Downstream is decoding that pass: three more seconds give no pass...
    done(&mut h, gst::ClockTime::from_mseconds(500));
    push_seconds(&mut h, 3);
    assert!(pull_lengths(&mut h).is_empty(), "a pass sent while one is in flight");
    // ...until it is done; the next buffer then brings a pass over all 4.1 s.
    done(&mut h, gst::ClockTime::from_seconds(1));
    push_seconds(&mut h, 1);
    assert_eq!(pull_lengths(&mut h), vec![4.1]);
}

/// Live: a complete window whose text the decoder has already pushed (it says how far in its
/// done events) is not sent again to be decoded; an `npuwhisper-window-released` event stands
/// for it, so the next pass is not held up by a decode that brings no new text.
#[test]
fn npumel_live_skips_a_window_its_passes_released() {
    init();
    for (released_s, expect_skip) in [(3.0, false), (8.0, true)] {
        // The window closes in the silence.
        let (mut h, audio) = live_tone_then_silence();
        let mut sent_done = false;
        for (i, chunk) in audio.chunks(1600).enumerate() {
            let pts = i as u64 * 1600;
            if pts >= 72_000 && !sent_done {
                // The decoder is done with the passes over the tone and has pushed text to here.
                let s = gst::Structure::builder("npuwhisper-pass-done")
                    .field("end", gst::ClockTime::from_mseconds(4500))
                    .field("released", gst::ClockTime::from_seconds_f64(released_s))
                    .build();
                assert!(h.push_upstream_event(gst::event::CustomUpstream::new(s)));
                sent_done = true;
            }
            let mut buffer = gst::Buffer::from_mut_slice(f32le(chunk));
            buffer.get_mut().unwrap().set_pts(sample_time(pts));
            h.push(buffer).unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        let mut complete = Vec::new();
        while let Some(b) = h.try_pull() {
            if !b.flags().contains(gst::BufferFlags::DROPPABLE) {
                complete.push(b.duration().unwrap().seconds_f64());
            }
        }
        let mut released = Vec::new();
        while let Some(ev) = h.try_pull_event() {
            if let gst::EventView::CustomDownstream(e) = ev.view() {
                let s = e.structure().unwrap();
                if s.name() == "npuwhisper-window-released" {
                    let (start, end) = (
                        s.get::<gst::ClockTime>("start").unwrap(),
                        s.get::<gst::ClockTime>("end").unwrap(),
                    );
                    released.push((start.seconds_f64(), end.seconds_f64()));
                }
            }
        }
        println!("text out to {released_s} s: complete windows {complete:?}, released {released:?}");
        if expect_skip {
            assert!(complete.is_empty(), "a released window sent again: {complete:?}");
            assert_eq!(released.len(), 1, "one event for the window: {released:?}");
            let (start, end) = released[0];
            assert!(
                start == 0.0 && (4.5..=6.5).contains(&end),
                "the window's span: {released:?}"
            );
        } else {
            assert_eq!(complete.len(), 1, "text not out yet: the window is decoded");
            assert!(released.is_empty(), "{released:?}");
        }
    }
}

#[test]
fn npumel_rejects_wrong_caps() {
    init();
    let mut h = energy_npumel();
    let caps = gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("rate", 44100i32)
        .field("channels", 1i32)
        .field("layout", "interleaved")
        .build();

    let sinkpad = h.element().unwrap().static_pad("sink").unwrap();
    assert!(!sinkpad.query_accept_caps(&caps));

    // A sticky event is stored even when refused: the refusal shows on the next buffer.
    h.push_event(gst::event::StreamStart::new("npumel-test"));
    h.push_event(gst::event::Caps::new(&caps));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()));
    let buffer = gst::Buffer::from_mut_slice(f32le(&[0.0; BUFFER_SAMPLES]));
    assert_eq!(h.push(buffer), Err(gst::FlowError::NotNegotiated));
}

#[test]
fn npuwhisperenc_missing_model() {
    init();
    let enc = gst::ElementFactory::make("npuwhisperenc")
        .property("model", "/nonexistent/dir")
        .build()
        .unwrap();
    let text = ready_error(&enc);
    assert!(
        text.contains("/nonexistent/dir"),
        "error does not name the directory: {text}"
    );
}

#[test]
fn npuwhisperenc_truncated_model() {
    if !common::require(&[common::Need::Models]) {
        return;
    }
    init();
    let dir = std::env::temp_dir().join(format!(
        "npuwhisper-truncated-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.bin"), b"\x06\x00\x00\x00garbag").unwrap();
    std::fs::write(dir.join("config.json"), b"").unwrap();
    // The loader reads the small files before model.bin: with the real ones beside the
    // truncated model.bin, model.bin is the only thing wrong.
    let reference = default_model_dir();
    let have_reference = ["config.json", "tokenizer.json", "vocabulary.txt"]
        .iter()
        .all(|f| std::fs::copy(reference.join(f), dir.join(f)).is_ok());

    let enc = gst::ElementFactory::make("npuwhisperenc")
        .property("model", dir.to_str().unwrap())
        .build()
        .unwrap();
    let text = ready_error(&enc);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains(dir.to_str().unwrap()),
        "error does not name the model: {text}"
    );
    if have_reference {
        assert!(text.contains("model.bin"), "error does not name model.bin: {text}");
    } else {
        println!("No default model to borrow tokenizer files from: checked only the directory");
    }
}

#[test]
fn npuwhisperdec_missing_model() {
    init();
    let dec = gst::ElementFactory::make("npuwhisperdec")
        .property("model", "/nonexistent/dir")
        .build()
        .unwrap();
    let text = ready_error(&dec);
    assert!(
        text.contains("/nonexistent/dir"),
        "error does not name the directory: {text}"
    );
}

fn default_model_dir() -> PathBuf {
    npuwhisper_core::model::resolve_model_path(npuwhisper_core::model::DEFAULT_MODEL)
}

#[test]
fn npuwhisper_bin_builds_and_cycles() {
    if !common::require(&[common::Need::Models]) {
        return;
    }
    init();
    let bin = gst::ElementFactory::make("npuwhisper").build().unwrap();
    assert!(bin.static_pad("sink").is_some());
    assert!(bin.static_pad("src").is_some());

    // Properties reach the decoder.
    bin.set_property("language", "de");
    bin.set_property_from_str("task", "translate");
    bin.set_property("condition-on-previous-text", false);
    assert_eq!(bin.property::<String>("language"), "de");
    assert!(!bin.property::<bool>("condition-on-previous-text"));
    let dec = bin.downcast_ref::<gst::Bin>().unwrap().by_name("dec").unwrap();
    assert_eq!(dec.property::<String>("language"), "de");
    bin.set_property("language", "auto");
    bin.set_property_from_str("task", "transcribe");
    // The encoder context reaches the encoder.
    let enc = bin.downcast_ref::<gst::Bin>().unwrap().by_name("enc").unwrap();
    assert_eq!(enc.property_value("context").serialize().unwrap(), "full");
    bin.set_property_from_str("context", "fit");
    assert_eq!(enc.property_value("context").serialize().unwrap(), "fit");
    assert_eq!(bin.property_value("context").serialize().unwrap(), "fit");
    bin.set_property_from_str("context", "full");

    let dir = default_model_dir();
    if !dir.is_dir() {
        println!(
            "Default model {} not found at {}: skipping the state cycles",
            npuwhisper_core::model::DEFAULT_MODEL,
            dir.display()
        );
        return;
    }
    for _ in 0..3 {
        assert_eq!(bin.set_state(gst::State::Ready), Ok(gst::StateChangeSuccess::Success));
        assert_eq!(bin.set_state(gst::State::Null), Ok(gst::StateChangeSuccess::Success));
    }
}

#[test]
fn npuwhisper_flushing_seek() {
    if !common::require(&[common::Need::Models]) {
        return;
    }
    init();
    let dir = default_model_dir();
    if !dir.is_dir() {
        println!("Default model not found at {}: skipping", dir.display());
        return;
    }
    // 45 s of tone: windows get cut, encoded and decoded whatever the model makes of them.
    let pipeline = gst::parse::launch(
        "audiotestsrc wave=sine volume=0.3 samplesperbuffer=1600 num-buffers=450 ! \
         npuwhisper ! fakesink sync=false",
    )
    .unwrap();
    let bus = pipeline.bus().unwrap();
    let wait = |types: &[gst::MessageType]| {
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(120), types)
            .expect("timed out");
        if let gst::MessageView::Error(err) = msg.view() {
            panic!("pipeline error: {} ({:?})", err.error(), err.debug());
        }
        msg
    };

    pipeline.set_state(gst::State::Paused).unwrap();
    wait(&[gst::MessageType::AsyncDone, gst::MessageType::Error]);
    pipeline
        .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::from_seconds(20))
        .expect("seek");
    wait(&[gst::MessageType::AsyncDone, gst::MessageType::Error]);
    pipeline.set_state(gst::State::Playing).unwrap();
    wait(&[gst::MessageType::Eos, gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
}
