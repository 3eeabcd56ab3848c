//! Text released on a live stream without a decode of its own window goes into the prompt as
//! a decode would have put it: tokenized with the model's BPE, the last half of the text
//! context kept, nothing when the previous text is not to be used.

mod support;

use npuwhisper_core::decoding::{DecodeOptions, Transcriber};
use npuwhisper_core::model::load_shared;

#[test]
fn released_text_prompts_the_next_window() {
    if !support::require(&[support::Need::Models]) {
        return;
    }
    let model = load_shared(&support::model_dir("tiny.en")).unwrap();
    let mut t = Transcriber::new(model.clone(), DecodeOptions::default());
    assert_eq!(t.prompt_text(), "");
    t.carry_text(" And so, my fellow Americans,");
    t.carry_text(" ask not what your country can do for you.");
    assert_eq!(
        t.prompt_text(),
        " And so, my fellow Americans, ask not what your country can do for you."
    );
    // Whitespace alone is no text.
    t.carry_text("  ");
    assert!(t.prompt_text().ends_with("for you."));

    // A long stream keeps only the last half of the text context (223 tokens for Whisper).
    let sentence = " The quick brown fox jumps over the lazy dog number";
    for i in 0..100 {
        t.carry_text(&format!("{sentence} {i}."));
    }
    let kept = t.prompt_text();
    assert!(kept.ends_with(&format!("{sentence} 99.")), "{kept}");
    assert!(!kept.contains("Americans"), "old text dropped");
    let tokens = model.tokenizer.encode(&kept).len();
    assert!((200..=223).contains(&tokens), "{tokens} tokens kept");

    let mut off = Transcriber::new(
        model,
        DecodeOptions {
            condition_on_previous_text: false,
            ..Default::default()
        },
    );
    off.carry_text(" And so, my fellow Americans,");
    assert_eq!(off.prompt_text(), "", "no previous text wanted");
}
