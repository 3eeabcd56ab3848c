//! The runner: loading each mutated directory under `catch_unwind`, checking the error names
//! the file at fault, running what loads; and the tests.

use super::mutations::*;
use super::*;

/// Loads `dir` under `catch_unwind`; `Err` is a failure to report.
/// `NPUWHISPER_FUZZ_VERBOSE=1` prints every case's outcome.
fn load_checked(dir: &Path, file: &str, label: &str) -> Result<Option<Model>, String> {
    let result = catch_unwind(AssertUnwindSafe(|| Model::load(dir)));
    if env_u64("NPUWHISPER_FUZZ_VERBOSE", 0) != 0 {
        match &result {
            Ok(Err(e)) => println!("{label}: {e}"),
            Ok(Ok(_)) => println!("{label}: loaded"),
            Err(_) => println!("{label}: PANIC"),
        }
    }
    match result {
        Err(panic) => Err(format!("PANIC: {}", panic_text(&panic))),
        Ok(Ok(model)) => Ok(Some(model)),
        Ok(Err(e)) => check_error(&e, dir, file).map(|()| None),
    }
}

fn check_error(e: &ModelError, dir: &Path, file: &str) -> Result<(), String> {
    let msg = e.to_string();
    let in_dir = e.file.parent() == Some(dir) && e.file.file_name().is_some_and(|f| FILES.iter().any(|n| f == *n));
    if !in_dir {
        return Err(format!("error is not about a file of the model: {msg}"));
    }
    if !msg.contains(file) {
        return Err(format!("error does not name {file}: {msg}"));
    }
    if msg.chars().count() > MAX_MESSAGE {
        return Err(format!(
            "error message of {} characters: {}…",
            msg.chars().count(),
            msg.chars().take(200).collect::<String>()
        ));
    }
    Ok(())
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// What the forward pass and decoding index with: the loader checks every tensor against the
/// dims, so two models of one signature index alike.
fn signature(m: &Model) -> String {
    let t = &m.tokenizer;
    format!(
        "{:?} {:?} {:?}",
        m.dims,
        m.config,
        (
            t.vocab_size(),
            t.eot,
            t.sot,
            t.translate,
            t.transcribe,
            t.sot_lm,
            t.sot_prev,
            t.no_speech,
            t.no_timestamps,
            t.timestamp_begin,
            &t.languages
        )
    )
}

/// A loaded model runs: one window encoded, decoded with timestamps and word alignment.
fn run_model(model: Model) -> Result<(), String> {
    let model = Arc::new(model);
    catch_unwind(AssertUnwindSafe(|| {
        let mel = vec![0.1f32; model.n_mels() * MEL_FRAMES];
        let states = model.encode_batch(&[&mel]).expect("encoder");
        let mut t = Transcriber::new(model.clone(), DecodeOptions::default());
        t.transcribe(&states[0], 12.0);
    }))
    .map_err(|p| format!("PANIC while running the loaded model: {}", panic_text(&p)))
}

fn temp_model_dir(tag: &str) -> PathBuf {
    let dir = support::tempfile_dir().join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

struct Tally {
    cases: usize,
    loaded: usize,
    ran: usize,
    errors: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            cases: 0,
            loaded: 0,
            ran: 0,
            errors: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    fn report(&self, what: &str, t0: Instant) {
        println!(
            "{what}: {} cases in {:.1} s: {} loaded ({} run), errors by file {:?}, {} failures",
            self.cases,
            t0.elapsed().as_secs_f64(),
            self.loaded,
            self.ran,
            self.errors,
            self.failures.len()
        );
        for f in self.failures.iter().take(200) {
            println!("  {f}");
        }
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} cases failed (listed above)",
            self.failures.len(),
            self.cases
        );
    }
}

#[test]
fn miniature_model_loads_and_runs() {
    let mini = Mini::new(&mut Rng(1));
    let dir = temp_model_dir("mini");
    mini.write(&dir);
    let model = Model::load(&dir).unwrap_or_else(|e| panic!("the miniature model does not load: {e}"));
    assert_eq!(
        (model.d_model(), model.n_mels(), model.dims.n_heads),
        (D, N_MELS, HEADS)
    );
    assert_eq!(
        (model.dims.encoder_layers, model.dims.decoder_layers),
        (ENC_LAYERS, DEC_LAYERS)
    );
    assert_eq!(model.dims.vocab_size, mini.vocab.len());
    assert_eq!(model.config.alignment_heads, vec![(1, 0), (1, 1)]);
    let t0 = Instant::now();
    run_model(model).unwrap();
    println!(
        "model.bin of {} bytes; one run: {:?}",
        mini.file("model.bin").len(),
        t0.elapsed()
    );
    // The untouched files load under every supported binary version.
    for version in 1..=6 {
        let m = Mini {
            version,
            ..mini.clone()
        };
        std::fs::write(dir.join("model.bin"), m.file("model.bin")).unwrap();
        Model::load(&dir).unwrap_or_else(|e| panic!("version {version}: {e}"));
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn fuzz_miniature_model() {
    let seed = env_u64("NPUWHISPER_FUZZ_SEED", 0x5EED);
    let cases = env_u64("NPUWHISPER_FUZZ_CASES", 12_000) as usize;
    let base = Base::new();
    let dir = temp_model_dir("fuzz");
    base.mini.write(&dir);
    let t0 = Instant::now();
    let mut tally = Tally::new();
    // Running a model is slow next to loading one: run each new signature, and one in 50 of
    // the others.
    let mut seen = std::collections::HashSet::new();
    for n in 0..cases {
        let mut rng = Rng(seed ^ (n as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let case = match rng.below(100) {
            0..=44 => mutate_bin_bytes(&base, &mut rng),
            45..=59 => mutate_bin_meaning(&base, &mut rng),
            60..=74 => mutate_config(&base, &mut rng),
            75..=86 => mutate_tokenizer(&base, &mut rng),
            _ => mutate_vocab(&base, &mut rng),
        };
        std::fs::write(dir.join(case.file), &case.bytes).unwrap();
        if let Some((file, bytes)) = &case.also {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        tally.cases += 1;
        let label = format!("case {n} ({}: {})", case.file, case.desc);
        match load_checked(&dir, case.file, &label) {
            Err(why) => tally.failures.push(format!("{label}: {why}")),
            Ok(None) => *tally.errors.entry(case.file).or_default() += 1,
            Ok(Some(model)) => {
                tally.loaded += 1;
                if case.must_fail {
                    tally
                        .failures
                        .push(format!("{label}: loaded, but the model is unusable"));
                }
                if seen.insert(signature(&model)) || tally.loaded.is_multiple_of(50) {
                    tally.ran += 1;
                    if let Err(why) = run_model(model) {
                        tally.failures.push(format!("{label}: {why}"));
                    }
                }
            }
        }
        for file in [Some(case.file), case.also.as_ref().map(|a| a.0)].into_iter().flatten() {
            std::fs::write(dir.join(file), base.file(file)).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    tally.report(&format!("miniature model, seed {seed:#x}"), t0);
}

#[test]
fn real_models_pass_the_checks() {
    if !support::require(&[support::Need::Models]) {
        return;
    }
    // The stricter checks must not turn away the models in use.
    for name in ["tiny.en", "base"] {
        let dir = npuwhisper_core::model::resolve_model_path(name);
        if name != "tiny.en" && !dir.is_dir() {
            println!("{name} is not fetched: skipped");
            continue;
        }
        let model = Model::load(&support::model_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: {:?}", model.dims);
    }
}

/// Offsets of the tensor-table fields of a real `model.bin` (version ≥ 4), for aimed overwrites.
fn table_fields(b: &[u8]) -> Vec<(usize, usize)> {
    let u16_at = |p: usize| u16::from_le_bytes([b[p], b[p + 1]]) as usize;
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
    let mut fields = vec![(0, 4)];
    let mut p = 4;
    fields.push((p, 2));
    p += 2 + u16_at(p);
    fields.push((p, 4));
    fields.push((p + 4, 4));
    let n = u32_at(p + 4);
    p += 8;
    for _ in 0..n {
        fields.push((p, 2));
        p += 2 + u16_at(p);
        let rank = b[p] as usize;
        fields.push((p, 1));
        p += 1;
        for _ in 0..rank {
            fields.push((p, 4));
            p += 4;
        }
        fields.push((p, 1));
        fields.push((p + 1, 4));
        p += 5 + u32_at(p + 1);
    }
    fields.push((p, 4));
    fields
}

#[test]
fn fuzz_real_model_header() {
    if !support::require(&[support::Need::Models]) {
        return;
    }
    let seed = env_u64("NPUWHISPER_FUZZ_SEED", 0x5EED);
    let cases = env_u64("NPUWHISPER_FUZZ_REAL_CASES", 300) as usize;
    let src = support::model_dir("tiny.en");
    let dir = temp_model_dir("tiny.en");
    for f in &FILES[1..] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let original = std::fs::read(src.join("model.bin")).unwrap();
    let path = dir.join("model.bin");
    std::fs::write(&path, &original).unwrap();
    let fields = table_fields(&original);
    const HEAD: usize = 4096;
    // The header, the flag scalars and the first tensor's entry; past them the first 4 kB are
    // embedding weights, whose changes mostly load (a full load takes a few tenths of a second).
    let table_end = fields
        .iter()
        .map(|&(at, len)| at + len)
        .filter(|&e| e < HEAD)
        .max()
        .unwrap();
    let in_head = |r: &mut Rng| {
        if r.chance(0.6) {
            r.below(table_end)
        } else {
            r.below(HEAD)
        }
    };
    let t0 = Instant::now();
    let mut tally = Tally::new();
    for n in 0..cases {
        let mut rng = Rng(seed ^ (n as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB));
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // (offset, original bytes) to put back, or a truncation to undo.
        let restore: Option<(usize, Vec<u8>)>;
        let desc = match rng.below(10) {
            0..=1 => {
                let len = if rng.chance(0.8) {
                    rng.below(HEAD)
                } else {
                    rng.below(original.len())
                };
                file.set_len(len as u64).unwrap();
                restore = Some((len, original[len..].to_vec()));
                format!("truncated to {len} bytes")
            }
            2..=4 => {
                let mut head = original[..HEAD].to_vec();
                let k = 1 + rng.below(8);
                let at = flip_bits(&mut head, in_head, k, &mut rng);
                file.write_all_at(&head, 0).unwrap();
                restore = Some((0, original[..HEAD].to_vec()));
                format!("bits flipped at {at}")
            }
            5..=6 => {
                let at = in_head(&mut rng).min(HEAD - 16);
                let k = 1 + rng.below(16);
                let junk: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
                file.write_all_at(&junk, at as u64).unwrap();
                restore = Some((at, original[at..at + k].to_vec()));
                format!("{k} random bytes at {at}")
            }
            _ => {
                let &(at, len) = rng.pick(&fields);
                let old = &original[at..at + len];
                let new: Vec<u8> = match len {
                    4 => interesting_u32(u32::from_le_bytes(old.try_into().unwrap()), original.len(), &mut rng)
                        .to_le_bytes()
                        .to_vec(),
                    2 => rng
                        .pick(&[0u16, 1, 0xFFFF, u16::from_le_bytes([old[0], old[1]]).wrapping_add(1)])
                        .to_le_bytes()
                        .to_vec(),
                    _ => vec![*rng.pick(&[0u8, 1, 2, 3, 4, 5, 6, 9, 0xFF])],
                };
                file.write_all_at(&new, at as u64).unwrap();
                restore = Some((at, old.to_vec()));
                format!("table field at {at} {old:02x?} -> {new:02x?}")
            }
        };
        drop(file);
        tally.cases += 1;
        let label = format!("case {n} ({desc})");
        match load_checked(&dir, "model.bin", &label) {
            Err(why) => tally.failures.push(format!("{label}: {why}")),
            Ok(None) => *tally.errors.entry("model.bin").or_default() += 1,
            Ok(Some(_)) => tally.loaded += 1,
        }
        let (at, bytes) = restore.unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&bytes, at as u64)
            .unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), original, "the copy was not restored");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    tally.report(&format!("tiny.en header, seed {seed:#x}"), t0);
}
