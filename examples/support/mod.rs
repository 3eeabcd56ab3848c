//! What the benchmark examples share: set-up, command-line options, memory figures and the
//! encoder/decoder busy times the elements log.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use npuwhisper_core::model::{self, Model};

// The GStreamer-free half (options, CPU time, memory), shared with core's examples.
#[path = "../../core/examples/support/mod.rs"]
mod process;
pub use process::*;

pub fn init() {
    gst::init().expect("GStreamer initialises");
    gstnpuwhisper::plugin_register_static().expect("the plugin registers");
}

/// Loads `name` (as the `model` property resolves it) and keeps it: the elements of every
/// pipeline made while the returned model lives share it instead of loading their own.
pub fn load_model(name: &str) -> Arc<Model> {
    let dir = model::resolve_model_path(name);
    model::load_shared(&dir).unwrap_or_else(|e| {
        eprintln!(
            "cannot load model {name} ({}): {e}; run scripts/fetch-models.sh",
            dir.display()
        );
        std::process::exit(1);
    })
}

/// With `backend=onnxruntime` among `props`, loads the model on the backend those properties
/// ask for and keeps it, as [`load_model`] keeps the CPU one: pipelines share it instead of
/// building their own encoder graph.
pub fn keep_backend_model(name: &str, props: &[(String, String)]) -> Option<Arc<Model>> {
    use npuwhisper_core::backend::onnxruntime::{GraphPrecision, OrtOptions, OrtStages};
    use npuwhisper_core::backend::BackendChoice;
    let prop = |name: &str| props.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if prop("backend") != Some("onnxruntime") {
        return None;
    }
    let precision = match prop("precision").unwrap_or("int8") {
        "f32" => model::Precision::F32,
        "int8" => model::Precision::Int8,
        p => {
            eprintln!("precision {p:?} is not f32 or int8");
            std::process::exit(2);
        }
    };
    let opts = OrtOptions {
        provider: prop("execution-provider").unwrap_or("cpu").to_string(),
        precision: GraphPrecision::from(precision),
        threads: prop("threads").and_then(|t| t.parse().ok()).unwrap_or(0),
        stages: prop("onnxruntime-stages")
            .map(|s| {
                OrtStages::parse(s).unwrap_or_else(|| {
                    eprintln!("onnxruntime-stages {s:?} is not encoder or encoder-decoder");
                    std::process::exit(2);
                })
            })
            .unwrap_or_default(),
        calibration: prop("onnxruntime-calibration").map(std::path::PathBuf::from),
    };
    let dir = model::resolve_model_path(name);
    let m = model::load_shared_on(&dir, precision, &BackendChoice::Onnxruntime(opts)).unwrap_or_else(|e| {
        eprintln!("cannot load model {name} on ONNX Runtime: {e}");
        std::process::exit(1);
    });
    Some(m)
}

/// Busy time of the encoder and the decoder, read from their debug log lines
/// ("Encoded N windows in 1.2s", "Decoded N windows from … in 812ms"), so nothing is timed
/// twice. Installing it replaces GStreamer's default log output.
#[derive(Default)]
pub struct StageTimes {
    encoder_ns: AtomicU64,
    decoder_ns: AtomicU64,
    windows: AtomicU64,
}

impl StageTimes {
    pub fn install() -> Arc<StageTimes> {
        let times = Arc::new(StageTimes::default());
        gst::log::set_threshold_for_name("npuwhisperenc", gst::DebugLevel::Debug);
        gst::log::set_threshold_for_name("npuwhisperdec", gst::DebugLevel::Debug);
        gst::log::remove_default_log_function();
        let t = times.clone();
        gst::log::add_log_function(move |cat, level, _file, _fn, _line, _obj, msg| {
            if level != gst::DebugLevel::Debug {
                return;
            }
            let Some(msg) = msg.get() else { return };
            let msg = msg.as_str();
            let counter = match cat.name() {
                "npuwhisperenc" if msg.starts_with("Encoded ") => &t.encoder_ns,
                "npuwhisperdec" if msg.starts_with("Decoded ") && msg.contains(" windows from ") => {
                    let n = msg.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1);
                    t.windows.fetch_add(n, Ordering::Relaxed);
                    &t.decoder_ns
                }
                _ => return,
            };
            if let Some(d) = msg.rsplit_once(" in ").and_then(|(_, rest)| parse_debug_duration(rest)) {
                counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
            }
        });
        times
    }

    /// (encoder s, decoder s, decoded windows) since the last call.
    pub fn take(&self) -> (f64, f64, u64) {
        (
            self.encoder_ns.swap(0, Ordering::Relaxed) as f64 / 1e9,
            self.decoder_ns.swap(0, Ordering::Relaxed) as f64 / 1e9,
            self.windows.swap(0, Ordering::Relaxed),
        )
    }
}

/// A `Duration` as `{:?}` prints it ("1.5s", "812.3ms", "12µs", "7ns"), up to a ':' or the end.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let s = s.split(':').next()?.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (value, unit) = s.split_at(split);
    let value: f64 = value.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_debug_durations() {
        let p = |s| super::parse_debug_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(p("1.5s"), Some(1.5));
        assert_eq!(p("812.5ms: 3 segments"), Some(0.8125));
        assert_eq!(p("12µs"), Some(12e-6));
        assert_eq!(p("soon"), None);
    }
}
