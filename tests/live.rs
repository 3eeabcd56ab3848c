//! The live path on real speech: audio pushed by a live `appsrc` paced by the clock (as a
//! capture device delivers it) through `npuwhisper` into an appsink. Checks the LATENCY answer,
//! that the text comes out within it (to the promised bounds when the machine is not busy with
//! other work), that it is close to file mode at the lowest latency of each model (growing windows decoded
//! again every 0.5-1 s, words emitted once two passes agree), that nothing is said twice or
//! during silences, which go out as GAP events, and that a latency below the model's lowest is
//! raised with a warning. The long-form runs take 144 s each.

mod common;

use common::*;
use gst::prelude::*;
use npuwhisper_core::model::{load_shared, resolve_model_path};
use npuwhisper_kernels::isa::Isa;

/// Slack over the promised latency for text on a shared, noisy machine.
const SLACK: f64 = 1.0;

/// One live run at a time: the test harness runs tests in parallel, and two live pipelines on
/// two cores would measure each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lowest latency (ms) the bin keeps for tiny.en and base on the kernels' SIMD path: a
/// pass takes longer without AMX (src/npuwhisperbin/live.rs, `path_factor`).
fn floors_ms() -> (u32, u32) {
    match Isa::detect() {
        Isa::Amx => (1500, 2000),
        Isa::Avx512Vnni => (1800, 2500),
        Isa::Avx2 => (2500, 4000),
        Isa::Portable => (6000, 11000),
    }
}

fn floor_ms(model: &str) -> u32 {
    if model == "base" {
        floors_ms().1
    } else {
        floors_ms().0
    }
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Words of `text` said again that `reference` does not say again: a word twice in a row, or a
/// pair of words more often than in the reference.
fn repeats(text: &str, reference: &str) -> Vec<String> {
    // A word right after itself, or three words in a row more often than spoken: a word left
    // out can make two words meet that the reference has once ("than the [capital] letters"),
    // a passage emitted again repeats more.
    let count = |w: &[String], n: usize| {
        let mut c = std::collections::HashMap::<String, usize>::new();
        for p in w.windows(n) {
            *c.entry(p.join(" ")).or_default() += 1;
        }
        c
    };
    let (heard, said) = (words(text), words(reference));
    let mut out: Vec<String> = Vec::new();
    for (n, min) in [(2, 1), (3, 2)] {
        let (h, r) = (count(&heard, n), count(&said, n));
        out.extend(
            h.into_iter()
                .filter(|(gram, k)| {
                    let doubled = n == 2 && gram.split(' ').collect::<Vec<_>>().windows(2).all(|p| p[0] == p[1]);
                    (doubled || (n == 3 && *k >= min)) && *k > r.get(gram).copied().unwrap_or(0)
                })
                .map(|(gram, k)| format!("{gram:?} ×{k}")),
        );
    }
    out.sort();
    out
}

/// Busy CPU seconds of the whole machine and of this process so far (/proc).
fn cpu_seconds() -> (f64, f64) {
    // Linux reports both in USER_HZ ticks, 100 a second on every architecture it runs on.
    let ticks = |fields: &[&str]| fields.iter().map(|f| f.parse::<f64>().unwrap_or(0.0)).sum::<f64>() / 100.0;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<&str> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).collect();
    // user nice system (idle iowait) irq softirq steal
    let machine = ticks(&cpu[..3.min(cpu.len())]) + ticks(cpu.get(5..8).unwrap_or(&[]));
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let own: Vec<&str> = own
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    (machine, ticks(own.get(11..13).unwrap_or(&[])))
}

/// Cores' worth of other processes' work beside a live run above which its delays are those
/// of a starved process, not of the element: a CI machine running other jobs.
const OTHER_WORK: f64 = 0.3;

/// What a live run of one file is checked against.
struct Expect {
    model: &'static str,
    latency_ms: u32,
    /// Bounds on the 95th percentile and the largest text delay over `latency`, on a machine
    /// that gives the run the CPU it asks for...
    p95_slack: f64,
    max_slack: f64,
    /// ...and when other processes kept more than [`OTHER_WORK`] busy during the run.
    loaded_p95_slack: f64,
    loaded_max_slack: f64,
    /// Points of WER live may lose against file mode.
    wer_points: f64,
}

/// Runs `file` (of manifest_long.tsv) live and checks what holds for any speech: the LATENCY
/// answer, the delays, nothing said twice, the WER against file mode. Returns the run.
fn run_and_check(file: &str, expect: &Expect) -> LiveRun {
    let _model = load_shared(&resolve_model_path(expect.model)).unwrap();
    let path = eval_file(file);
    let reference = manifest("manifest_long.tsv")
        .into_iter()
        .find(|(f, _, _)| f == file)
        .unwrap()
        .2;
    let model = [("model", expect.model)];
    let file_text = joined_text(&transcribe(&path, &model));

    // Below the model's floor on this SIMD path the bin keeps the floor.
    let latency_ms = expect.latency_ms.max(floor_ms(expect.model));
    let (t0, (machine0, own0)) = (std::time::Instant::now(), cpu_seconds());
    let run = run_live(
        &read_wav(&path),
        &[("latency", &expect.latency_ms.to_string()), model[0]],
    );
    let (machine1, own1) = cpu_seconds();
    let others = ((machine1 - machine0) - (own1 - own0)).max(0.0) / t0.elapsed().as_secs_f64();
    let (cues, (live, min)) = (&run.cues, run.latency);
    for c in cues {
        println!(
            "{:7.2} {:7.2} +{:.2} s  {}",
            c.cue.start, c.cue.end, c.delay, c.cue.text
        );
    }
    let latency = latency_ms as f64 / 1000.0;
    assert!(live, "npuwhisper is live");
    assert_eq!(
        min.mseconds(),
        latency_ms as u64 + LIVE_CHUNK_MS,
        "LATENCY: appsrc's {LIVE_CHUNK_MS} ms + latency"
    );

    let delays: Vec<f64> = cues.iter().map(|c| c.delay).collect();
    let (p50, p95, max) = percentiles(&delays);
    println!(
        "{} at {latency_ms} ms, text delay after its audio: p50 {p50:.2} s, p95 {p95:.2} s, max {max:.2} s; \
         other processes kept {others:.2} cores busy",
        expect.model
    );
    let (p95_slack, max_slack) = if others > OTHER_WORK {
        println!("the machine was busy with other work: delays checked against the loaded bounds");
        (expect.loaded_p95_slack, expect.loaded_max_slack)
    } else {
        (expect.p95_slack, expect.max_slack)
    };

    let text = joined_text(&cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    let live_wer = wer(&[(reference.clone(), text.clone())]);
    let file_wer = wer(&[(reference.clone(), file_text.clone())]);
    println!("live: {text}\nfile: {file_text}\nWER live {live_wer:.2} %, file {file_wer:.2} %");

    // Nothing said twice, nor more words than spoken.
    let again = repeats(&text, &reference);
    assert!(again.is_empty(), "said again: {again:?} in {text}");
    let w = words(&text);
    assert!(
        w.len() <= words(&reference).len() + 2,
        "{} words for {} spoken: {text}",
        w.len(),
        words(&reference).len()
    );
    assert!(
        cues.windows(2).all(|p| p[0].cue.end <= p[1].cue.start + 1e-6),
        "text overlaps"
    );
    assert!(
        live_wer <= file_wer + expect.wer_points,
        "live WER {live_wer:.2} % vs file {file_wer:.2} %"
    );

    assert!(
        p95 <= latency + p95_slack,
        "text delay p95 {p95:.2} s at latency {latency:.1} s"
    );
    // Never behind without bound: even the latest text is at most a pass or two late.
    assert!(
        max <= latency + max_slack,
        "text {max:.2} s after its audio at latency {latency:.1} s"
    );
    run
}

/// jfk.wav, 20 s silence, a short phrase, 20 s silence: 56 s in real time.
#[test]
fn live_speech_and_silences_within_latency() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let _serial = one_at_a_time();
    // A word or two more wrong than in file mode (README, Benchmarks): the first words of a
    // stream get the fewest passes.
    // All text within the LATENCY answer (appsrc's 0.1 s + 3 s) and the slack.
    let within = LIVE_CHUNK_MS as f64 / 1000.0 + SLACK;
    let run = run_and_check(
        "silence_gaps.wav",
        &Expect {
            model: "tiny.en",
            latency_ms: 3000,
            p95_slack: within,
            max_slack: within,
            loaded_p95_slack: within,
            loaded_max_slack: within,
            wer_points: 10.0,
        },
    );

    // No text in the silences: jfk.wav is 0-11 s, the phrase about 31-33.5 s.
    let jfk_end = read_wav(&eval_file("jfk.wav")).len() as f64 / 16000.0;
    let right_start = jfk_end + 20.0;
    let right_end = right_start + read_wav(&eval_file("stereo_right.wav")).len() as f64 / 16000.0;
    for c in &run.cues {
        let in_speech =
            c.cue.start < jfk_end + 0.5 || (c.cue.start >= right_start - 0.5 && c.cue.end <= right_end + 0.5);
        assert!(in_speech, "text in a silence: {c:?}");
    }
    // The silences go downstream as gaps, a second or so at a time, as they happen.
    for (from, to) in [(jfk_end + 1.0, right_start - 1.0), (right_end + 1.0, right_end + 19.0)] {
        let covered: f64 = run.gaps.iter().map(|&(s, e)| (e.min(to) - s.max(from)).max(0.0)).sum();
        let longest = run
            .gaps
            .iter()
            .filter(|&&(s, e)| e > from && s < to)
            .map(|&(s, e)| e - s)
            .fold(0.0, f64::max);
        println!("silence {from:.1}-{to:.1} s: {covered:.1} s covered by gaps, longest {longest:.1} s");
        assert!(
            covered >= (to - from) * 0.9,
            "gaps cover {covered:.1} s of the silence {from:.1}-{to:.1} s: {:?}",
            run.gaps
        );
        assert!(
            longest <= 3.0,
            "a gap of {longest:.1} s holds time back longer than the latency"
        );
    }
}

// The long-form runs hold the text to latency + 0.5 s at p95 (+ 1 s with this process's own
// busy thread; base, + 0.75 s for now), when the machine gives them the CPU they ask for.
// When other processes kept the machine busy during a run (a CI machine shared with other
// jobs), the delays are those of a starved process and wider bounds apply; the run says so.
// The text checks (WER against file mode, nothing said twice, no more words than spoken)
// are strict either way.

/// Twenty LJ Speech clips, 144 s in real time, at the lowest latency tiny.en supports.
#[test]
fn live_long_form_tiny_at_1500_ms() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let _serial = one_at_a_time();
    run_and_check(
        "long_lj001_1-20.wav",
        &Expect {
            model: "tiny.en",
            latency_ms: 1500,
            p95_slack: 0.5,
            max_slack: 1.5,
            loaded_p95_slack: 1.5,
            loaded_max_slack: 3.5,
            wer_points: 2.0,
        },
    );
}

/// The same at the lowest latency base supports.
#[test]
fn live_long_form_base_at_2000_ms() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let _serial = one_at_a_time();
    run_and_check(
        "long_lj001_1-20.wav",
        &Expect {
            model: "base",
            latency_ms: 2000,
            p95_slack: 0.5,
            max_slack: 1.5,
            loaded_p95_slack: 3.0,
            loaded_max_slack: 5.0,
            wer_points: 2.0,
        },
    );
}

/// With another process's work on one of the cores, passes take longer: npumel sends the next
/// one only when the decoder is done with the last (over all the audio so far), and stale
/// ones are skipped, so the text stays within a second of the latency and keeps its quality.
#[test]
fn live_long_form_with_a_busy_core() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let _serial = one_at_a_time();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    let run = std::panic::catch_unwind(|| {
        run_and_check(
            "long_lj001_1-20.wav",
            &Expect {
                model: "tiny.en",
                latency_ms: 3000,
                p95_slack: 1.0,
                max_slack: 2.0,
                loaded_p95_slack: 3.0,
                loaded_max_slack: 5.0,
                wer_points: 3.0,
            },
        )
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hog.join().unwrap();
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }
}

/// Below the lowest latency of the model the bin raises the latency to it, says so on the
/// bus, and answers LATENCY with what it keeps.
#[test]
fn live_latency_below_the_floor_is_raised() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    init();
    let (tiny_floor, base_floor) = floors_ms();
    for (model, floor) in [("tiny.en", tiny_floor), ("base", base_floor)] {
        let bin = gst::ElementFactory::make("npuwhisper")
            .property("model", model)
            .build()
            .unwrap();
        assert_eq!(
            bin.property::<u32>("min-latency"),
            0,
            "not known before the model is loaded"
        );
        bin.set_state(gst::State::Ready).unwrap();
        assert_eq!(bin.property::<u32>("min-latency"), floor, "{model}");
        bin.set_state(gst::State::Null).unwrap();
    }

    let _serial = one_at_a_time();
    let samples = read_wav(&eval_file("jfk.wav"));
    let run = run_live(&samples, &[("latency", "1000")]);
    println!("warnings: {:?}", run.warnings);
    assert_eq!(
        run.latency.1.mseconds(),
        tiny_floor as u64 + LIVE_CHUNK_MS,
        "LATENCY: raised to tiny.en's {tiny_floor} ms"
    );
    assert!(
        run.warnings
            .iter()
            .any(|w| w.contains("1000 ms") && w.contains(&format!("{tiny_floor} ms"))),
        "a warning names both latencies: {:?}",
        run.warnings
    );
    let text = joined_text(&run.cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    let reference =
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert!(repeats(&text, reference).is_empty(), "said again: {text}");
    assert!(text.to_lowercase().contains("country"), "{text}");
}

/// A capture that loses 3 s of audio (timestamps jump, DISCONT) in the middle of jfk.wav: text
/// keeps coming, on the new timeline, nothing is repeated and the stream ends.
#[test]
fn live_discontinuity_does_not_stall() {
    if !common::require(&[common::Need::Models, common::Need::Shared, common::Need::Venv]) {
        return;
    }
    let _serial = one_at_a_time();
    let samples = read_wav(&eval_file("jfk.wav"));
    // The jump falls at 5 s, after "ask not", in the pause before "what your country".
    let jump_at = (5000 / LIVE_CHUNK_MS) as usize;
    let run = run_live_with_jump(&samples, &[], Some((jump_at, gst::ClockTime::from_seconds(3))));
    for c in &run.cues {
        println!(
            "{:7.2} {:7.2} +{:.2} s  {}",
            c.cue.start, c.cue.end, c.delay, c.cue.text
        );
    }
    let text = joined_text(&run.cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    let reference =
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert!(repeats(&text, reference).is_empty(), "said again: {text}");
    assert!(
        run.cues.windows(2).all(|p| p[0].cue.start <= p[1].cue.start),
        "text goes back in time"
    );
    let after: Vec<&str> = run
        .cues
        .iter()
        .filter(|c| c.cue.start >= 8.0)
        .map(|c| c.cue.text.as_str())
        .collect();
    assert!(
        after.join(" ").to_lowercase().contains("country"),
        "text after the jump is on the new timeline: {text}"
    );
    let wer = wer(&[(reference.into(), text.clone())]);
    println!("WER {wer:.2} %: {text}");
    assert!(wer <= 25.0, "WER {wer:.2} % across the jump: {text}");
    // Words still unconfirmed when the audio stops wait for the next audio, 3 s later here.
    let (_, _, max) = percentiles(&run.cues.iter().map(|c| c.delay).collect::<Vec<_>>());
    assert!(max <= 3.1 + 3.0 + SLACK, "text {max:.2} s after its audio");
}

/// `lateness` moves the text's timestamps later by that much (for downstream that would
/// otherwise drop text arriving after its time), without changing the text or the LATENCY.
#[test]
fn live_lateness_offsets_the_text() {
    if !common::require(&[common::Need::Models, common::Need::Shared]) {
        return;
    }
    let _serial = one_at_a_time();
    let samples = read_wav(&eval_file("jfk.wav"));
    let run = run_live(&samples, &[("lateness", "2000")]);
    let text = joined_text(&run.cues.iter().map(|c| c.cue.clone()).collect::<Vec<_>>());
    let first = run.cues.first().expect("text").cue.start;
    let last = run.cues.last().unwrap().cue.end;
    println!("first text at {first:.2} s, last ends {last:.2} s: {text}");
    // jfk.wav speaks from about 0.3 s to 10.7 s; shifted by 2 s.
    assert!((2.0..3.5).contains(&first), "first text at {first:.2} s");
    assert!(
        last <= 2.0 + samples.len() as f64 / 16000.0 + 0.1,
        "text ends at {last:.2} s"
    );
    assert_eq!(
        run.latency.1.mseconds(),
        3000 + LIVE_CHUNK_MS,
        "lateness does not change the LATENCY answer"
    );
    assert!(text.to_lowercase().contains("country"), "{text}");
}
