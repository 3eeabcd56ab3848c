//! `npuwhisper`: transcribes recordings to subtitles and text with the npuwhisper GStreamer
//! plugin, in this process. See `npuwhisper --help` and the README.

mod formats;
mod outputs;
mod transcribe;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use gst::prelude::*;

use formats::Format;
use outputs::{Output, Pending};
use transcribe::Failure;

/// The signal that asked to stop (0 = none).
static STOP: AtomicI32 = AtomicI32::new(0);

/// Extensions a directory walk picks up.
const MEDIA: &[&str] = &[
    "wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "mka", "aiff", "aif", "mp4", "m4v", "mkv", "webm",
    "mov", "avi", "ts", "mts", "mpg", "mpeg", "3gp", "amr",
];

/// Transcribe recordings with Whisper (the npuwhisper GStreamer plugin).
///
/// Each INPUT (a media file, or a directory walked for them) is written as <stem>.<ext> into
/// the output directory, through a temporary file renamed on success. Exit status 0 only when
/// every input succeeded; 130 or 143 after Ctrl-C or SIGTERM (older outputs kept).
#[derive(Parser, Debug)]
#[command(name = "npuwhisper", version)]
struct Args {
    /// Media files or directories
    #[arg(required_unless_present = "files_from", value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Also transcribe the files named in FILE, one path a line ("-": standard input), each
    /// started as soon as its line is read, until the end of FILE (a long-lived worker)
    #[arg(long, value_name = "FILE", conflicts_with = "output_file")]
    files_from: Option<PathBuf>,
    /// Directory for the outputs (made if missing)
    #[arg(short = 'o', long, alias = "output_dir", value_name = "DIR", default_value = ".")]
    output_dir: PathBuf,
    /// Write this one file instead (one INPUT; the format from its extension unless --format)
    #[arg(long, alias = "output_file", value_name = "FILE", conflicts_with = "output_dir")]
    output_file: Option<PathBuf>,
    /// Output formats, comma-separated [default: srt]
    #[arg(
        short = 'f',
        long,
        alias = "output-format",
        alias = "output_format",
        value_enum,
        value_delimiter = ',',
        value_name = "FORMAT"
    )]
    format: Vec<Format>,
    /// Model name in the models directory, or a CTranslate2 model directory [default: tiny.en]
    #[arg(short = 'm', long)]
    model: Option<String>,
    /// Spoken language code, or "auto" (multilingual models)
    #[arg(short = 'l', long)]
    language: Option<String>,
    /// transcribe, or translate to English
    #[arg(long, value_parser = ["transcribe", "translate"])]
    task: Option<String>,
    /// One cue per word, timed by alignment, instead of laid-out phrases
    #[arg(long, alias = "word_timestamps")]
    word_timestamps: bool,
    /// Compute threads, shared by all jobs (0 = every core)
    #[arg(short = 't', long)]
    threads: Option<u32>,
    /// Characters per cue line (npuwhisper max-line-chars) [default: 42]
    #[arg(long, alias = "max_line_width", value_name = "CHARS")]
    max_line_width: Option<u32>,
    /// Lines per cue (max-lines) [default: 2]
    #[arg(long, alias = "max_line_count", value_name = "LINES")]
    max_line_count: Option<u32>,
    /// Shortest cue in seconds, where the speech allows (min-cue-duration) [default: 1]
    #[arg(long, value_name = "SECONDS")]
    min_cue_duration: Option<f64>,
    /// Longest cue in seconds (max-cue-duration) [default: 7]
    #[arg(long, value_name = "SECONDS")]
    max_cue_duration: Option<f64>,
    /// Reading speed limit, characters per second (max-reading-speed; 0 = none) [default: 17]
    #[arg(long, value_name = "CPS")]
    max_cps: Option<f64>,
    /// Any property of the npuwhisper element (gst-inspect-1.0 npuwhisper), e.g. beam-size=5
    #[arg(long = "set", value_name = "PROPERTY=VALUE")]
    set: Vec<String>,
    /// Recordings transcribed at once, sharing one loaded model
    #[arg(short = 'j', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// Leave out inputs whose outputs all exist (resumes a batch)
    #[arg(long, alias = "skip_existing")]
    skip_existing: bool,
    /// Write one JSON line per input: input, status, audio_seconds, wall_seconds, error ("-":
    /// standard output, each line as soon as its input is done)
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// No progress bar
    #[arg(short = 'q', long)]
    quiet: bool,
}

impl Args {
    /// The npuwhisper properties the options stand for, then the --set ones (which win).
    fn properties(&self) -> Result<Vec<(String, String)>, String> {
        let mut props = Vec::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                props.push((name.to_string(), v));
            }
        };
        put("model", self.model.clone());
        put("language", self.language.clone());
        put("task", self.task.clone());
        put("word-timestamps", self.word_timestamps.then(|| "true".into()));
        put("threads", self.threads.map(|v| v.to_string()));
        put("max-line-chars", self.max_line_width.map(|v| v.to_string()));
        put("max-lines", self.max_line_count.map(|v| v.to_string()));
        let ms = |s: f64| ((s * 1000.0).round().max(0.0) as u64).to_string();
        put("min-cue-duration", self.min_cue_duration.map(ms));
        put("max-cue-duration", self.max_cue_duration.map(ms));
        put("max-reading-speed", self.max_cps.map(|v| v.to_string()));
        for s in &self.set {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("--set '{s}' is not PROPERTY=VALUE"))?;
            props.push((k.trim().to_string(), v.to_string()));
        }
        Ok(props)
    }
}

/// What became of one input.
#[derive(Debug)]
struct Done {
    input: PathBuf,
    status: &'static str,
    audio_seconds: Option<f64>,
    wall_seconds: f64,
    error: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("npuwhisper: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The files named on the command line and those found in its directories, sorted.
fn expand_inputs(args: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(arg)
                .follow_links(true)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| e.into_path())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| MEDIA.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(arg.clone());
        }
    }
    out
}

/// Permissions of a new file under the process umask.
fn file_mode() -> u32 {
    // SAFETY: umask only swaps the process's mask; set back at once, before any thread runs.
    let mask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    0o666 & !(mask as u32)
}

// The workers loop until the queue is empty or a stop is asked: two exits, kept as breaks.
#[allow(clippy::while_let_loop)]
fn run(args: Args) -> Result<ExitCode, String> {
    let mode = file_mode();
    install_signal_handlers()?;
    let props = args.properties()?;
    let inputs = expand_inputs(&args.inputs);
    let streaming = args.files_from.is_some();
    if inputs.is_empty() && !streaming {
        return Err("no media files in the inputs".into());
    }

    // Where everything goes, checked before any work.
    let plan: Vec<(PathBuf, Vec<Output>)> = match &args.output_file {
        Some(file) => {
            if inputs.len() != 1 {
                return Err(format!("--output-file takes one input, not {}", inputs.len()));
            }
            let format = match args.format.as_slice() {
                [] => Format::from_extension(file)
                    .ok_or_else(|| format!("cannot tell the format of '{}': use --format", file.display()))?,
                [f] => *f,
                _ => return Err("--output-file writes one format".into()),
            };
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            outputs::check_dir(dir)?;
            vec![(
                inputs[0].clone(),
                vec![Output {
                    path: file.clone(),
                    format,
                }],
            )]
        }
        None => {
            outputs::check_dir(&args.output_dir)?;
            inputs
                .iter()
                .map(|i| (i.clone(), outputs::outputs_in(&args.output_dir, i, &formats(&args))))
                .collect()
        }
    };
    outputs::check_outputs(&plan)?;

    gst::init().map_err(|e| format!("GStreamer does not start: {e}"))?;
    gstnpuwhisper::plugin_register_static().map_err(|e| format!("the npuwhisper plugin does not register: {e}"))?;
    // Holds the model for the whole run (the elements share a loaded model while one holds it)
    // and checks the properties and the model before any work.
    let keeper = load_model(&props)?;

    let total = plan.len();
    let bar = progress_bar(total as u64, args.quiet || streaming);
    let (sender, receiver) = std::sync::mpsc::channel::<Job>();
    for (k, (i, o)) in plan.into_iter().enumerate() {
        let _ = sender.send((k, i, o));
    }
    if let Some(list) = &args.files_from {
        read_list(list, sender, total, args.output_dir.clone(), formats(&args))?;
    } else {
        drop(sender);
    }
    let jobs = if streaming {
        args.jobs
    } else {
        args.jobs.min(total as u32)
    };
    let queue = Arc::new(Mutex::new(receiver));
    // Thousandths done: of finished inputs, and of the one each job works on.
    let finished = Arc::new(AtomicU64::new(0));
    let permille: Arc<Vec<AtomicU64>> = Arc::new((0..jobs).map(|_| AtomicU64::new(0)).collect());
    let results: Arc<Mutex<Vec<(usize, Done)>>> = Arc::default();
    let stream_report = args.report.as_deref() == Some(Path::new("-"));
    let started = Instant::now();

    let workers: Vec<_> = (0..jobs as usize)
        .map(|w| {
            let (queue, results, finished, permille, bar, props) = (
                queue.clone(),
                results.clone(),
                finished.clone(),
                permille.clone(),
                bar.clone(),
                props.clone(),
            );
            let skip_existing = args.skip_existing;
            std::thread::spawn(move || loop {
                let Some((k, input, outs)) = next_job(&queue) else {
                    break;
                };
                if STOP.load(Ordering::SeqCst) != 0 {
                    queue_back(&results, k, input, stream_report);
                    break;
                }
                let position = |current: u64| {
                    permille[w].store(current, Ordering::Relaxed);
                    let working: u64 = permille.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                    bar.set_position(finished.load(Ordering::Relaxed) + working);
                };
                let show = |f: f64| position((f.clamp(0.0, 1.0) * 1000.0) as u64);
                let done = if skip_existing && outs.iter().all(|o| o.path.is_file()) {
                    show(1.0);
                    Done {
                        input,
                        status: "skipped",
                        audio_seconds: None,
                        wall_seconds: 0.0,
                        error: None,
                    }
                } else {
                    bar.set_message(
                        input
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                    let done = one(&input, &outs, &props, mode, &show);
                    if let Some(err) = &done.error {
                        bar.suspend(|| eprintln!("npuwhisper: {}: {err}", input.display()));
                    }
                    done
                };
                finished.fetch_add(1000, Ordering::Relaxed);
                position(0);
                if stream_report {
                    print_report_line(&done);
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push((k, done));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    bar.finish_and_clear();
    drop(keeper);

    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let stopped = STOP.load(Ordering::SeqCst);
    let results_left = Mutex::new(Vec::new());
    // Inputs never started: in the report as interrupted.
    for (k, input, _) in queue.lock().unwrap_or_else(|e| e.into_inner()).try_iter() {
        queue_back(&results_left, k, input, stream_report);
    }
    results.append(&mut results_left.lock().unwrap_or_else(|e| e.into_inner()));
    results.sort_by_key(|(k, _)| *k);
    let results: Vec<Done> = results.into_iter().map(|(_, d)| d).collect();
    if stream_report {
        // printed as they came
    } else if let Some(path) = &args.report {
        write_report(path, &results, mode).map_err(|e| format!("cannot write the report '{}': {e}", path.display()))?;
    }
    summary(&results, started.elapsed().as_secs_f64());
    if stopped != 0 {
        eprintln!("npuwhisper: stopped by signal {stopped}: unfinished outputs discarded, earlier files kept");
        return Ok(ExitCode::from(128 + stopped as u8));
    }
    Ok(if results.iter().all(|d| d.status == "ok" || d.status == "skipped") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Transcribes one input into its outputs.
fn one(input: &Path, outs: &[Output], props: &[(String, String)], mode: u32, show: &dyn Fn(f64)) -> Done {
    let t0 = Instant::now();
    let mut done = Done {
        input: input.to_path_buf(),
        status: "failed",
        audio_seconds: None,
        wall_seconds: 0.0,
        error: None,
    };
    let result = (|| {
        if !input.is_file() {
            return Err(Failure::Error("no such file".into()));
        }
        // Made first: they exist only while the work runs, and a full disk shows early.
        let pending: Vec<Pending> = outs
            .iter()
            .map(|o| {
                Pending::create(&o.path)
                    .map_err(|e| Failure::Error(format!("cannot write '{}': {e}", o.path.display())))
            })
            .collect::<Result<_, _>>()?;
        let transcript = transcribe::transcribe(input, props, &STOP, show)?;
        done.audio_seconds = transcript.duration;
        for (p, o) in pending.into_iter().zip(outs) {
            p.commit(&o.format.render(&transcript, input), mode)
                .map_err(|e| Failure::Error(format!("cannot write '{}': {e}", o.path.display())))?;
        }
        Ok(())
    })();
    done.wall_seconds = t0.elapsed().as_secs_f64();
    match result {
        Ok(()) => done.status = "ok",
        Err(Failure::Interrupted) => done.status = "interrupted",
        Err(Failure::Error(e)) => done.error = Some(e),
    }
    done
}

/// A READY npuwhisper with the properties: loads and holds the model; reports a bad property
/// or model now rather than once per input.
fn load_model(props: &[(String, String)]) -> Result<gst::Pipeline, String> {
    let pipeline = gst::Pipeline::new();
    let asr = gst::ElementFactory::make("npuwhisper")
        .build()
        .map_err(|e| e.to_string())?;
    transcribe::set_properties(&asr, props)?;
    pipeline.add(&asr).map_err(|e| e.to_string())?;
    if pipeline.set_state(gst::State::Ready).is_err() {
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let why = bus.iter().find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        });
        let _ = pipeline.set_state(gst::State::Null);
        return Err(why.unwrap_or_else(|| "npuwhisper does not start".into()));
    }
    Ok(pipeline)
}

/// Ctrl-C or SIGTERM: every job stops, its temporary files are removed, and the command exits
/// 130 or 143. A second one ends at once.
fn install_signal_handlers() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if STOP
                .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                outputs::remove_pending();
                let _ = std::io::stderr().write_all(b"\nnpuwhisper: stopped at once\n");
                std::process::exit(128 + STOP.load(Ordering::SeqCst));
            }
        }
    });
    Ok(())
}

fn progress_bar(inputs: u64, quiet: bool) -> indicatif::ProgressBar {
    let target = if quiet {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(inputs * 1000), target);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix}[{bar:30}] {percent:>3}% ETA {eta} {wide_msg}")
            .expect("the template is valid")
            .progress_chars("#>."),
    );
    if inputs > 1 {
        bar.set_prefix(format!("{inputs} files "));
    }
    bar
}

fn report_line(d: &Done) -> String {
    serde_json::json!({
        "input": d.input.to_string_lossy(),
        "status": d.status,
        "audio_seconds": d.audio_seconds,
        "wall_seconds": d.wall_seconds,
        "error": d.error,
    })
    .to_string()
}

fn write_report(path: &Path, results: &[Done], mode: u32) -> std::io::Result<()> {
    let mut lines = String::new();
    for d in results {
        lines.push_str(&report_line(d));
        lines.push('\n');
    }
    Pending::create(path)?.commit(&lines, mode)
}

/// One line on standard output, flushed, for a process that reads them as they come.
fn print_report_line(d: &Done) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", report_line(d)).and_then(|()| out.flush());
}

/// An input, its index and its outputs.
type Job = (usize, PathBuf, Vec<Output>);

fn formats(args: &Args) -> Vec<Format> {
    if args.format.is_empty() {
        vec![Format::Srt]
    } else {
        args.format.clone()
    }
}

/// Reads `list` ("-": standard input) in a thread, sending each path as a job numbered from
/// `first` until the end of the list.
fn read_list(
    list: &Path,
    sender: std::sync::mpsc::Sender<Job>,
    first: usize,
    dir: PathBuf,
    formats: Vec<Format>,
) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let reader: Box<dyn BufRead + Send> = if list == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(list).map_err(|e| format!("cannot read the list '{}': {e}", list.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    std::thread::spawn(move || {
        for (k, line) in (first..).zip(reader.split(b'\n').map_while(Result::ok)) {
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                continue;
            }
            let input = PathBuf::from(std::ffi::OsStr::from_bytes(line));
            let outs = outputs::outputs_in(&dir, &input, &formats);
            if sender.send((k, input, outs)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// The next job, or None at the end of the inputs or once a signal asked to stop.
fn next_job(queue: &Mutex<Receiver<Job>>) -> Option<Job> {
    let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match queue.recv_timeout(Duration::from_millis(200)) {
            Ok(job) => return Some(job),
            Err(RecvTimeoutError::Timeout) if STOP.load(Ordering::SeqCst) == 0 => continue,
            Err(_) => return None,
        }
    }
}

/// A job taken but not started because a signal asked to stop.
fn queue_back(results: &Mutex<Vec<(usize, Done)>>, k: usize, input: PathBuf, print: bool) {
    let done = interrupted(input);
    if print {
        print_report_line(&done);
    }
    results.lock().unwrap_or_else(|e| e.into_inner()).push((k, done));
}

fn interrupted(input: PathBuf) -> Done {
    Done {
        input,
        status: "interrupted",
        audio_seconds: None,
        wall_seconds: 0.0,
        error: None,
    }
}

fn summary(results: &[Done], wall: f64) {
    let count = |s: &str| results.iter().filter(|d| d.status == s).count();
    let audio: f64 = results.iter().filter_map(|d| d.audio_seconds).sum();
    let mut line = format!(
        "npuwhisper: {} transcribed, {} failed, {} skipped",
        count("ok"),
        count("failed"),
        count("skipped")
    );
    if count("interrupted") > 0 {
        line += &format!(", {} interrupted", count("interrupted"));
    }
    line += &format!("; {audio:.1} s of audio in {wall:.1} s");
    if wall > 0.0 && audio > 0.0 {
        line += &format!(" ({:.1}x realtime)", audio / wall);
    }
    eprintln!("{line}");
}
