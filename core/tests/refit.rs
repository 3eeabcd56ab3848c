//! The fitted encoder context's safety net (`Transcriber::transcribe_batch_refit`, which
//! npuwhisperdec runs for windows npuwhisperenc encoded over a fitted context): a window whose
//! text fails Whisper's checks is decoded again from its full-context states.
//! `silence_gaps.wav` ends with a 2.6 s clip after a pause ("The horizon seems extremely
//! distant."); encoded over its audio plus 1 to 2.3 s (`fit64+50`), tiny.en repeats it to the
//! token limit at every temperature (README, Encoder context). Over the full context it does not.

#[path = "support/mod.rs"]
mod support;

use npuwhisper_core::audio::vad::{self, SileroVad, VadSettings};
use npuwhisper_core::audio::{level_speech, Detector, SileroFrames, Windower, WindowerSettings, WINDOW_SAMPLES};
use npuwhisper_core::decoding::{DecodeOptions, Transcriber};
use npuwhisper_core::model::{fitted_frames, load_shared, resolve_model_path, Model, ENCODER_FRAMES};
use npuwhisper_kernels::mel::LogMel;

/// The speech windows of `file` as the elements cut them: (log-mel, samples).
fn mel_windows(model: &Model, file: &str) -> Vec<(Vec<f32>, usize)> {
    let samples = support::read_wav(&support::eval_file(file));
    let vad = SileroVad::load(&vad::default_model_path()).unwrap();
    let detector = Detector::Silero(Box::new(SileroFrames::new(vad, VadSettings::default())));
    let mut windower = Windower::with_detector(WindowerSettings::default(), detector);
    let mut windows = windower.push(&samples).unwrap();
    windows.extend(windower.flush().unwrap());
    let mel = LogMel::new(model.n_mels());
    windows
        .into_iter()
        .filter(|w| w.has_speech)
        .map(|mut w| {
            level_speech(&mut w.samples, &w.speech);
            (mel.compute(&w.samples, WINDOW_SAMPLES), w.samples.len())
        })
        .collect()
}

/// One window per batch (each prompted with the text before it, as the decoder does for
/// windows that silence separates); with `refit`, a failing fitted window gets its full
/// context. Returns the text and how many windows were encoded again.
fn transcribe(model: &std::sync::Arc<Model>, windows: &[(Vec<f32>, usize)], refit: bool) -> (String, usize) {
    let states: Vec<Vec<f32>> = windows
        .iter()
        .map(|(mel, n)| {
            model
                .encode_batch_frames(&[mel], fitted_frames(*n, 64, 50))
                .unwrap()
                .remove(0)
        })
        .collect();
    let options = DecodeOptions {
        language: Some("en".into()),
        ..Default::default()
    };
    let mut transcriber = Transcriber::new(model.clone(), options);
    let mut text = Vec::new();
    for (i, (s, (_, n))) in states.iter().zip(windows).enumerate() {
        assert!(s.len() < ENCODER_FRAMES * model.d_model(), "window {i} is fitted");
        let full = |_: usize| model.encode_batch(&[&windows[i].0]).ok().and_then(|mut s| s.pop());
        let batch = [(s.as_slice(), *n as f64 / 16_000.0)];
        let results = if refit {
            transcriber.transcribe_batch_refit(&batch, &full)
        } else {
            transcriber.transcribe_batch(&batch)
        };
        text.extend(results.into_iter().flat_map(|r| r.segments).map(|s| s.text));
    }
    (text.join(" "), transcriber.refits())
}

#[test]
fn a_fitted_window_that_loops_is_decoded_again_over_the_full_context() {
    if !support::require(&[support::Need::Models, support::Need::Shared, support::Need::Venv]) {
        return;
    }
    let model = load_shared(&resolve_model_path("tiny.en")).unwrap();
    let windows = mel_windows(&model, "silence_gaps.wav");
    let reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do \
                     for your country. The horizon seems extremely distant.";

    let (looped, none) = transcribe(&model, &windows, false);
    let without = support::score(&[(reference.to_string(), looped.clone())]);
    println!("fit64+50 without the net: {without:?}: {looped}");
    assert_eq!(none, 0);
    // The case the net is for: a loop costs tens of words of 27.
    assert!(
        without.errors >= 20,
        "fit64+50 did not loop here ({without:?}): {looped}"
    );

    let (text, refits) = transcribe(&model, &windows, true);
    let with = support::score(&[(reference.to_string(), text.clone())]);
    println!("fit64+50 with the net: {with:?}, {refits} windows encoded again: {text}");
    assert!(
        refits >= 1 && refits < windows.len(),
        "{refits} of {} windows",
        windows.len()
    );
    // The full context's transcript of this file has no error; one word for a path's rounding.
    assert!(with.errors <= 1, "{with:?}: {text}");
}
