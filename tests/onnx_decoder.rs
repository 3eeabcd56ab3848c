//! The static-shape decoder graphs on ONNX Runtime (CPU provider) against the CPU backend's
//! decoder, on the same encoder states of real eval audio and the same tokens: a prompt longer
//! than a chunk, greedy steps (the CPU's choices fed to both), a forked beam, two sequences in
//! one call, the context filled to its last position, and word alignment's attention weights.

mod common;

use common::*;
use npuwhisper_core::backend::onnxruntime::{DecoderDims, GraphPrecision, OrtDecoder, OrtOptions, CHUNK};
use npuwhisper_core::backend::{AlignmentRequest, BackendError, Sequence, StepInput};
use npuwhisper_core::model::{Model, Precision};

/// Largest absolute difference, and the largest logit magnitude for scale.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    (d, a.iter().map(|x| x.abs()).fold(0f32, f32::max))
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

struct Pair<'a> {
    cpu: &'a Model,
    ort: &'a OrtDecoder,
    worst: f32,
    scale: f32,
    vocab: usize,
    bound: f32,
    /// Rows whose best token differs (asserted none in float32).
    flips: usize,
    rows: usize,
}

impl Pair<'_> {
    /// Runs `tokens` after both sequences with logits at `rows`; returns the CPU's logits
    /// after checking the ORT ones against them.
    fn step(&mut self, what: &str, c: &mut Sequence, o: &mut Sequence, tokens: &[u32], rows: &[usize]) -> Vec<f32> {
        let input = [StepInput {
            tokens,
            logits_at: rows,
        }];
        let lc = self.cpu.decode(&mut [c], &input, None).unwrap().logits;
        let lo = self.ort.decode(&mut [o], &input, None).unwrap().logits;
        self.check(what, &lc, &lo);
        lc
    }

    fn check(&mut self, what: &str, lc: &[f32], lo: &[f32]) {
        let (d, s) = max_diff(lc, lo);
        self.worst = self.worst.max(d);
        self.scale = self.scale.max(s);
        for (r, (rc, ro)) in lc.chunks(self.vocab).zip(lo.chunks(self.vocab)).enumerate() {
            // A near tie may flip; what matters is that the chosen token scores the same.
            let (bc, bo) = (argmax(rc), argmax(ro));
            self.rows += 1;
            if bc != bo && (rc[bc as usize] - rc[bo as usize]).abs() >= 1e-3 {
                assert!(
                    self.bound > BOUND,
                    "{what} row {r}: argmax {bo} on ONNX Runtime, {bc} on the CPU"
                );
                self.flips += 1;
            }
        }
        assert!(d <= self.bound, "{what}: logits differ by {d} (bound {})", self.bound);
    }
}

/// f32 on both sides, only the order of the sums differs (logits up to ~70); a wrong layout,
/// mask, position or cache slot moves logits by whole units.
const BOUND: f32 = 5e-3;

/// The ONNX Runtime decoder at `precision` against the CPU backend in float32; logits within
/// `bound`, alignment weights within `weights_bound`.
fn compare(model: &str, precision: GraphPrecision, bound: f32, weights_bound: f32) {
    let dir = model_dir(model);
    let cpu = Model::load_with(&dir, Precision::F32).unwrap();
    let dims = DecoderDims::from(&cpu.dims);
    let opts = OrtOptions {
        precision,
        ..OrtOptions::default()
    };
    let ort = OrtDecoder::from_model_dir(&dir, dims, &opts).unwrap();
    let tok = &cpu.tokenizer;
    let id = |t: &str| tok.token_id(t).unwrap_or_else(|| panic!("{t} not in the vocabulary"));
    let mel = npuwhisper_kernels::mel::LogMel::new(cpu.n_mels());
    let window = mel.compute(&read_wav(&eval_file("jfk.wav")), 480_000);
    let states = cpu.encode_batch(&[&window]).unwrap().remove(0);
    let (cc, co) = (cpu.cross_cache(&states).unwrap(), ort.cross_cache(&states).unwrap());
    let mut p = Pair {
        cpu: &cpu,
        ort: &ort,
        worst: 0.0,
        scale: 0.0,
        vocab: dims.vocab,
        bound,
        flips: 0,
        rows: 0,
    };

    // A previous-text prompt longer than a chunk, then the start of the transcript.
    let mut prompt = vec![id("<|startofprev|>")];
    prompt.extend(tok.encode(
        " Printing, in the only sense with which we are at present concerned, differs from most if not from all \
         the arts and crafts represented in the Exhibition in being comparatively modern.",
    ));
    prompt.push(id("<|startoftranscript|>"));
    if cpu.is_multilingual() {
        prompt.extend([id("<|en|>"), id("<|transcribe|>")]);
    }
    prompt.push(id("<|notimestamps|>"));
    assert!(prompt.len() > CHUNK, "the prompt must span chunks: {}", prompt.len());
    let (mut c, mut o) = (cpu.sequence(&cc).unwrap(), ort.sequence(&co).unwrap());
    // Logits at a row of the first chunk, one of the last, and the last.
    let rows = [3, CHUNK + 1, prompt.len() - 1];
    let lc = p.step("prompt", &mut c, &mut o, &prompt, &rows);
    let mut next = argmax(&lc[2 * dims.vocab..]);

    // Greedy steps, the CPU's choice fed to both; a fork half-way goes its own way.
    let mut fork = None;
    let mut text = Vec::new();
    for i in 0..24 {
        if i == 12 {
            fork = Some((c.clone(), o.clone()));
        }
        text.push(next);
        let lc = p.step(&format!("step {i}"), &mut c, &mut o, &[next], &[0]);
        next = argmax(&lc);
    }
    println!("{model} {precision:?}: greedy text {:?}", tok.decode(&text));
    assert_eq!(o.len(), prompt.len() + 24);
    let (mut fc, mut fo) = fork.unwrap();
    let other = tok.encode(" and so");
    p.step("fork", &mut fc, &mut fo, &other, &[0, 1]);

    // Two sequences in one call, with different token counts.
    let (mut c2, mut o2) = (cpu.sequence(&cc).unwrap(), ort.sequence(&co).unwrap());
    let short = &prompt[prompt.len() - 3..];
    let inputs = [
        StepInput {
            tokens: &[next],
            logits_at: &[0],
        },
        StepInput {
            tokens: short,
            logits_at: &[2],
        },
    ];
    let lc = cpu.decode(&mut [&mut c, &mut c2], &inputs, None).unwrap().logits;
    let lo = ort.decode(&mut [&mut o, &mut o2], &inputs, None).unwrap().logits;
    p.check("two sequences", &lc, &lo);

    // The context filled to its last position: chunks reaching past 448 (padding in the spare
    // slots), then the last single token, then an error.
    let (mut c3, mut o3) = (cpu.sequence(&cc).unwrap(), ort.sequence(&co).unwrap());
    let filler: Vec<u32> = prompt.iter().cycle().take(dims.max_positions - 5).copied().collect();
    p.step("long prefill", &mut c3, &mut o3, &filler, &[filler.len() - 1]);
    p.step("near the end", &mut c3, &mut o3, &prompt[..4], &[0, 3]);
    p.step("last position", &mut c3, &mut o3, &prompt[..1], &[0]);
    assert_eq!(o3.remaining(), 0);
    let input = [StepInput {
        tokens: &prompt[..1],
        logits_at: &[0],
    }];
    match ort.decode(&mut [&mut o3], &input, None) {
        Err(BackendError::ContextFull {
            tokens: 1,
            remaining: 0,
        }) => {}
        other => panic!("past the context: {other:?}"),
    }
    println!(
        "{model} {precision:?}: ONNX Runtime decoder logits vs CPU f32: largest difference {:.2e} (logits up to {:.1}), \
         best token differs in {} of {} rows",
        p.worst, p.scale, p.flips, p.rows
    );

    // Word alignment's weights over the transcript tokens: heads of two layers, 551 frames.
    let l = dims.layers;
    let heads = [(l - 1, 0), (l / 2, 1), (l - 1, dims.n_heads - 1)];
    let request = AlignmentRequest {
        heads: &heads,
        n_frames: 551,
    };
    let sot = prompt.iter().position(|&t| t == id("<|startoftranscript|>")).unwrap();
    let mut aligned = prompt[sot..].to_vec();
    aligned.extend(&text);
    aligned.extend(&text);
    assert!(aligned.len() > CHUNK);
    let all: Vec<usize> = (0..aligned.len()).collect();
    let input = [StepInput {
        tokens: &aligned,
        logits_at: &all,
    }];
    let (mut c4, mut o4) = (cpu.sequence(&cc).unwrap(), ort.sequence(&co).unwrap());
    let oc = cpu.decode(&mut [&mut c4], &input, Some(request)).unwrap();
    let oo = ort.decode(&mut [&mut o4], &input, Some(request)).unwrap();
    p.check("alignment pass", &oc.logits, &oo.logits);
    assert_eq!(oc.attention.len(), heads.len());
    assert_eq!(oo.attention.len(), heads.len());
    let mut worst = 0f32;
    for (wc, wo) in oc.attention.iter().zip(&oo.attention) {
        assert_eq!(wc.len(), aligned.len() * 551);
        worst = worst.max(max_diff(wc, wo).0);
    }
    println!("{model} {precision:?}: alignment weights: largest difference {worst:.2e}");
    // Weights are in [0, 1]; a wrong head, row or frame range differs by tenths.
    assert!(worst <= weights_bound, "alignment weights differ by {worst}");
}

#[test]
fn tiny_en_decoder_graph_matches_cpu_logits() {
    compare("tiny.en", GraphPrecision::F32, BOUND, 1e-4);
}

#[test]
fn base_decoder_graph_matches_cpu_logits() {
    compare("base", GraphPrecision::F32, BOUND, 1e-4);
}

/// float16 and int8 QDQ graphs against the CPU's float32: their figures are the point (by
/// hand, for the README); the bounds only catch a broken graph.
#[test]
#[ignore = "figures for the README: cargo test --release --test onnx_decoder -- --ignored --nocapture"]
fn f16_and_int8_decoder_graphs_stay_close() {
    for model in ["tiny.en", "base"] {
        compare(model, GraphPrecision::F16, 2.0, 0.1);
        compare(model, GraphPrecision::Int8Qdq, 2.0, 0.1);
    }
}
