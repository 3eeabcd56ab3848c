//! The video pipelines of `pipelines/` run as a user would (bash, gst-launch-1.0, the plugins
//! cargo built in the checkout) on a test video, a ball on black with jfk.wav as its sound, and
//! their output is read back: CEA-608 captions out of the H.264 stream (caption-video.sh), the
//! subtitle track out of the Matroska file (subtitle-track.sh), the frames of the burnt-in
//! video (burn-captions.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use gst::prelude::*;

#[path = "../../tests/common/mod.rs"]
mod common;

use common::captions::{cc_data_field1, cea608_text, on_extracted_captions};
use common::{eval_file, manifest, on_buffers, read_wav, repo, tempfile_dir, wer};

const FPS: u64 = 30;
/// Seconds of video after the speech: captions come out up to the latency after their words,
/// and need frames to ride on.
const TAIL_S: f64 = 4.0;

/// One pipeline at a time: the caption pipeline runs in real time and the two cores are few.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn jfk_reference() -> String {
    manifest("manifest.tsv")
        .into_iter()
        .find(|(f, _, _)| f == "jfk.wav")
        .expect("jfk.wav in manifest.tsv")
        .2
}

fn jfk_seconds() -> f64 {
    read_wav(&eval_file("jfk.wav")).len() as f64 / 16000.0
}

/// Lower-case words, punctuation dropped.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Runs `pipeline` (a gst-launch description) to EOS; panics on an error.
fn run(desc: &str) {
    common::init();
    let pipeline = gst::parse::launch(desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    run_to_eos(&pipeline, desc);
}

fn run_to_eos(pipeline: &gst::Pipeline, what: &str) {
    pipeline
        .set_state(gst::State::Playing)
        .unwrap_or_else(|e| panic!("{what} does not play: {e}"));
    let bus = pipeline.bus().unwrap();
    let mut eos = false;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                eos = true;
                break;
            }
            gst::MessageView::Error(e) => panic!("{what}: {} ({:?})", e.error(), e.debug()),
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(eos, "{what}: no EOS within 120 s");
}

/// The test video in `dir`: H.264 (320×240, 30 fps, a ball on black) and AAC (jfk.wav),
/// `TAIL_S` longer than the speech, in MP4.
fn jfk_video(dir: &Path) -> PathBuf {
    let out = dir.join("jfk-video.mp4");
    let frames = ((jfk_seconds() + TAIL_S) * FPS as f64) as u64;
    run(&format!(
        "filesrc location=\"{}\" ! wavparse ! audioconvert ! avenc_aac ! aacparse ! queue ! mux.audio_0 \
         videotestsrc num-buffers={frames} pattern=ball background-color=0xff000000 \
           ! video/x-raw,width=320,height=240,framerate={FPS}/1 \
           ! x264enc tune=zerolatency speed-preset=ultrafast ! h264parse ! queue ! mux.video_0 \
         mp4mux name=mux ! filesink location=\"{}\"",
        eval_file("jfk.wav").display(),
        out.display()
    ));
    out
}

/// Runs `pipelines/NAME` on `input`, writing `output`, with npuwhisper properties `props`.
fn run_script(name: &str, input: &Path, output: &Path, props: &[&str]) {
    let started = std::time::Instant::now();
    let status = Command::new("bash")
        .arg(repo().join("pipelines").join(name))
        .arg(input)
        .arg(output)
        .args(props)
        .status()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(status.success(), "{name} failed: {status}");
    assert!(output.is_file(), "{name} wrote no {}", output.display());
    println!(
        "{name}: {} in {:.1} s",
        output.display(),
        started.elapsed().as_secs_f64()
    );
}

/// `(PTS in s, CEA-608 text)` of each video frame with captions in the H.264 stream of `file`
/// (MP4 or MPEG-TS): h264parse turns the SEI into caption metas, ccextractor hands them out.
fn extract_captions(file: &Path) -> Vec<(f64, String)> {
    common::init();
    let demux = if file.extension().is_some_and(|e| e == "ts") {
        "tsdemux"
    } else {
        "qtdemux"
    };
    let desc = format!(
        "filesrc location=\"{}\" ! {demux} name=demux demux. ! video/x-h264 ! queue ! h264parse \
         ! ccextractor name=cc ! fakesink",
        file.display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let captions: Arc<Mutex<Vec<(f64, String)>>> = Arc::default();
    {
        let captions = captions.clone();
        // ccextractor hands out what h264parse found: CEA-708 cc_data.
        on_extracted_captions(&pipeline, &pipeline.by_name("cc").unwrap(), move |buffer| {
            let pts = buffer.pts().map_or(f64::NAN, |t| t.seconds_f64());
            let text = cea608_text(&cc_data_field1(&buffer.map_readable().unwrap()));
            captions.lock().unwrap().push((pts, text));
        });
    }
    run_to_eos(&pipeline, &desc);
    let captions = captions.lock().unwrap().clone();
    captions
}

/// caption-video.sh to MPEG-TS and MP4: the captions read back out of the H.264 stream hold the
/// words of the speech and start within the latency of it.
#[test]
fn caption_video_round_trip() {
    if !common::require(&[common::Need::Shared]) {
        return;
    }
    let _serial = serial();
    let dir = tempfile_dir();
    let input = jfk_video(&dir);
    let reference = words(&jfk_reference());
    // The default latency; what live decoding makes of the speech is measured in tests/live.rs,
    // here the captions must carry it through.
    let latency_ms = 3000;
    for ext in ["ts", "mp4"] {
        let output = dir.join(format!("captioned.{ext}"));
        run_script("caption-video.sh", &input, &output, &[]);
        let frames = extract_captions(&output);
        let text: String = frames.iter().map(|(_, t)| t.as_str()).collect();
        let first = frames
            .iter()
            .find(|(_, t)| t.chars().any(|c| c.is_alphanumeric()))
            .map(|(pts, _)| *pts);
        println!(
            "{ext}: {} frames with captions, first letters at {first:?} s; captions as typed:\n{text}",
            frames.len()
        );

        let got = words(&text);
        let present = reference.iter().filter(|w| got.contains(w)).count();
        let share = present as f64 / reference.len() as f64;
        println!(
            "{ext}: {present} of {} reference words in the captions ({:.0} %)",
            reference.len(),
            share * 100.0
        );
        for w in ["fellow", "americans", "country"] {
            assert!(
                got.iter().any(|g| g == w),
                "{ext}: '{w}' is not in the captions: {text}"
            );
        }
        assert!(
            share >= 0.7,
            "{ext}: only {:.0} % of the reference words in the captions: {text}",
            share * 100.0
        );
        // Speech starts at 0.3 s; the captions within the latency (and the typing) of it.
        let first = first.expect("captions with letters");
        assert!(
            first <= 0.3 + latency_ms as f64 / 1000.0 + 1.0,
            "{ext}: first caption at {first} s"
        );
    }
}

/// subtitle-track.sh: the Matroska file has video, audio and a subtitle track whose entries
/// hold the transcript (WER ≤ 10 %) and lie inside the audio, in order.
#[test]
fn subtitle_track_holds_the_transcript() {
    if !common::require(&[common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let _serial = serial();
    let dir = tempfile_dir();
    let input = jfk_video(&dir);
    let output = dir.join("subtitled.mkv");
    run_script("subtitle-track.sh", &input, &output, &[]);

    common::init();
    let desc = format!(
        "filesrc location=\"{}\" ! matroskademux name=demux \
         demux.subtitle_0 ! queue ! appsink name=text sync=false \
         demux.audio_0 ! queue ! decodebin ! audioconvert ! appsink name=audio sync=false \
         demux.video_0 ! queue ! fakesink",
        output.display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let cues: Arc<Mutex<Vec<(f64, f64, String)>>> = Arc::default();
    let audio_end: Arc<Mutex<f64>> = Arc::default();
    let appsink = |name: &str| pipeline.by_name(name).unwrap().downcast::<gst_app::AppSink>().unwrap();
    {
        let cues = cues.clone();
        on_buffers(&appsink("text"), move |buffer| {
            let start = buffer.pts().expect("subtitle with a PTS").seconds_f64();
            let end = start + buffer.duration().expect("subtitle with a duration").seconds_f64();
            let text = String::from_utf8(buffer.map_readable().unwrap().to_vec()).expect("UTF-8 subtitles");
            cues.lock().unwrap().push((start, end, text));
        });
        let audio_end = audio_end.clone();
        on_buffers(&appsink("audio"), move |buffer| {
            if let Some(pts) = buffer.pts() {
                let end = (pts + buffer.duration().unwrap_or_default()).seconds_f64();
                let mut audio_end = audio_end.lock().unwrap();
                *audio_end = audio_end.max(end);
            }
        });
    }
    run_to_eos(&pipeline, &desc);
    let cues = cues.lock().unwrap().clone();
    let audio_end = *audio_end.lock().unwrap();
    for (start, end, text) in &cues {
        println!("  {start:6.2} {end:6.2}  {text}");
    }
    let transcript = cues.iter().map(|(_, _, t)| t.trim()).collect::<Vec<_>>().join(" ");
    let wer = wer(&[(jfk_reference(), transcript.clone())]);
    println!(
        "subtitle track: {} entries, audio track {audio_end:.2} s, WER {wer:.1} %",
        cues.len()
    );

    assert!(!cues.is_empty(), "no subtitle entries");
    assert!(wer <= 10.0, "WER {wer:.1} % of the subtitle track: {transcript}");
    // The speech ends at 11 s; the audio track goes on with the video's silent tail.
    assert!(audio_end >= jfk_seconds() - 0.1, "audio track ends at {audio_end} s");
    for (i, (start, end, text)) in cues.iter().enumerate() {
        assert!(start < end, "entry {i} ({text}) has no duration");
        assert!(
            *end <= jfk_seconds() + 0.05,
            "entry {i} ({text}) ends at {end} s, after the speech"
        );
        if i > 0 {
            assert!(
                *start >= cues[i - 1].0,
                "entry {i} ({text}) starts before the one before it"
            );
        }
    }
}

/// Decoded frames of `file` as 8-bit grey: `(PTS in s, pixels)`, 320×240.
fn grey_frames(file: &Path) -> Vec<(f64, Vec<u8>)> {
    common::init();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=GRAY8,width=320,height=240 \
         ! appsink name=sink sync=false",
        file.display()
    );
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        // Rows without their padding, if any.
        let stride = map.len() / 240;
        let pixels = map
            .chunks(stride)
            .take(240)
            .flat_map(|row| row[..320].to_vec())
            .collect();
        frames.push((buffer.pts().unwrap().seconds_f64(), pixels));
    }
    let bus = pipeline.bus().unwrap();
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("decoding {}: {} ({:?})", file.display(), e.error(), e.debug());
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// Pixels of the bottom third, where the text is drawn, that differ by more than a quarter of
/// the grey scale between two frames (coding noise stays far below).
fn bottom_changed(a: &[u8], b: &[u8]) -> usize {
    let from = a.len() * 2 / 3;
    a[from..]
        .iter()
        .zip(&b[from..])
        .filter(|(x, y)| x.abs_diff(**y) > 64)
        .count()
}

/// burn-captions.sh: the output decodes to as many frames as the input, over the same time, and
/// differs from it at the bottom while the speech goes on, not after it.
#[test]
fn burn_captions_draws_the_text() {
    if !common::require(&[common::Need::Shared]) {
        return;
    }
    let _serial = serial();
    let dir = tempfile_dir();
    let input = jfk_video(&dir);
    for ext in ["mp4", "mkv"] {
        let output = dir.join(format!("burnt.{ext}"));
        run_script("burn-captions.sh", &input, &output, &[]);
        let original = grey_frames(&input);
        let burnt = grey_frames(&output);
        println!("{ext}: {} frames in, {} out", original.len(), burnt.len());
        assert_eq!(burnt.len(), original.len(), "{ext}: frame count");
        // Same span; the start may move by a frame or two (the encoder's reordering delay).
        let span = |f: &[(f64, Vec<u8>)]| (f[0].0, f.last().unwrap().0 - f[0].0);
        let ((first_in, span_in), (first_out, span_out)) = (span(&original), span(&burnt));
        println!(
            "{ext}: frames from {first_in:.3} s over {span_in:.3} s in, from {first_out:.3} s over {span_out:.3} s out"
        );
        assert!(
            (span_in - span_out).abs() < 0.5 / FPS as f64,
            "{ext}: frames span {span_out} s, the input's {span_in} s"
        );
        assert!(
            (first_in - first_out).abs() <= 0.1,
            "{ext}: first frame at {first_out} s, the input's at {first_in} s"
        );

        // Frame i of one is frame i of the other. "And so my fellow Americans" is spoken
        // from 0.3 s to 3 s; nothing after 11 s.
        let at = |t: f64| (t * FPS as f64) as usize;
        let after_s = jfk_seconds() + 2.0;
        let speech = bottom_changed(&original[at(2.0)].1, &burnt[at(2.0)].1);
        let after = bottom_changed(&original[at(after_s)].1, &burnt[at(after_s)].1);
        println!(
            "{ext}: {speech} pixels of the bottom third changed at 2 s (speech), {after} at {after_s:.0} s (after it)"
        );
        assert!(speech >= 100, "{ext}: no text drawn at 2 s ({speech} pixels changed)");
        assert!(
            after <= 10,
            "{ext}: {after} pixels changed at {after_s:.0} s, after the speech"
        );
    }
}

/// An input without video (jfk.wav) is refused at once, not waited on forever.
#[test]
fn video_pipelines_refuse_audio_only_input() {
    if !common::require(&[common::Need::Shared]) {
        return;
    }
    let dir = tempfile_dir();
    for (name, ext) in [
        ("caption-video.sh", "ts"),
        ("subtitle-track.sh", "mkv"),
        ("burn-captions.sh", "mp4"),
    ] {
        let output = dir.join(format!("out.{ext}"));
        let out = Command::new("bash")
            .arg(repo().join("pipelines").join(name))
            .arg(eval_file("jfk.wav"))
            .arg(&output)
            .output()
            .unwrap_or_else(|e| panic!("{name} runs: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{name}: {status}, {stderr}", status = out.status);
        assert!(!out.status.success(), "{name} succeeded on an audio-only input");
        assert!(stderr.contains("has no video stream"), "{name} said: {stderr}");
        assert!(!output.exists(), "{name} left {}", output.display());
    }
}
