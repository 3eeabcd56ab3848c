//! Whisper's larger sizes (small, medium, large-v3 with 128 mel bins, large-v3-turbo with 4
//! decoder layers) as CTranslate2 directories of random weights written here (0.5 to 3.1 GB,
//! each deleted before the next): each loads in INT8, encodes one window and decodes a few
//! token steps, with the shapes and finite values of its dimensions. Their speed and memory:
//! examples/large_dims.rs.

mod common;
mod fixtures;

use std::time::Instant;

use npuwhisper_core::model::{Model, Precision, WeightCache};

#[test]
fn larger_sizes_load_and_run() {
    for dims in [
        fixtures::SMALL,
        fixtures::MEDIUM,
        fixtures::LARGE_V3,
        fixtures::LARGE_V3_TURBO,
    ] {
        let dir = common::tempfile_dir().join(dims.name);
        let t0 = Instant::now();
        // base's multilingual vocabulary (51865 tokens; large-v3's has one language more).
        let bytes = fixtures::write_model(&dir, &dims, &common::model_dir("base"), 7);
        let written = t0.elapsed();
        let t0 = Instant::now();
        let model = Model::load_cached(&dir, Precision::Int8, &WeightCache::Off)
            .unwrap_or_else(|e| panic!("{}: {e}", dims.name));
        let loaded = t0.elapsed();
        let d = model.dims;
        assert_eq!(
            (d.n_mels, d.d_model, d.n_heads, d.encoder_layers, d.decoder_layers),
            (
                dims.n_mels,
                dims.d_model,
                dims.n_heads,
                dims.encoder_layers,
                dims.decoder_layers
            ),
            "{}",
            dims.name
        );
        assert_eq!(d.vocab_size, model.tokenizer.vocab_size());
        const STEPS: usize = 4;
        let (encoded, stepped) = fixtures::window_and_steps(&model, STEPS);
        println!(
            "{}: model.bin {:.2} GB written in {written:.1?}, INT8 load {loaded:.1?}, one window {encoded:.1?}, {:.1} ms per token step",
            dims.name,
            bytes as f64 / 1e9,
            stepped.as_secs_f64() * 1e3 / STEPS as f64
        );
        drop(model);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}
