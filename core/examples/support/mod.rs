//! What the examples share without GStreamer: command-line options, CPU time and memory
//! figures of this process. Core's examples include it; the plugin's `examples/support`
//! re-exports it.
#![allow(dead_code)]

/// `--name value` options and `--flag`s after the program name.
pub struct Args(Vec<String>);

impl Args {
    /// `usage` is printed for `--help` and on unknown options (any not in `known`).
    pub fn parse(usage: &str, known: &[&str]) -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        for a in args.iter().filter(|a| a.starts_with("--")) {
            if a == "--help" {
                println!("{usage}");
                std::process::exit(0);
            }
            if !known.contains(&a.as_str()) {
                eprintln!("unknown option {a}\n{usage}");
                std::process::exit(2);
            }
        }
        Args(args)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        match self.0.get(i + 1) {
            Some(v) => Some(v),
            None => {
                eprintln!("{name} needs a value");
                std::process::exit(2);
            }
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    pub fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.value(name).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name}: cannot read {v:?}");
                std::process::exit(2);
            })
        })
    }
}

/// This process's resource usage so far, all threads.
fn usage() -> libc::rusage {
    // SAFETY: getrusage only writes the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

/// Peak resident set of this process so far, in MB (getrusage's ru_maxrss).
pub fn peak_rss_mb() -> f64 {
    usage().ru_maxrss as f64 / 1024.0
}

/// CPU seconds (user + system) this process has used so far, all threads.
pub fn cpu_seconds() -> f64 {
    let usage = usage();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Current resident set of this process, in MB (/proc/self/statm).
pub fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1024.0 * 1024.0)
}

/// The Silero VAD from the models directory, on the kernels or (`onnxruntime`) through ONNX
/// Runtime; exits with the error when it cannot be loaded.
pub fn load_vad(onnxruntime: bool) -> npuwhisper_core::audio::vad::SileroVad {
    use npuwhisper_core::audio::vad::{self, SileroVad};
    let path = vad::default_model_path();
    let vad = if onnxruntime {
        SileroVad::load_onnxruntime(&path)
    } else {
        SileroVad::load(&path)
    };
    vad.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    })
}
