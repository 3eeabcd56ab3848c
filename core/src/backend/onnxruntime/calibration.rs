//! Calibration of the int8 encoder graph's activation quantization: the encoder graph run on a
//! few windows of audio the user gives, each activation's range recorded, as ONNX Runtime's
//! static quantization (min/max calibration) does. NPU providers (QNN's HTP, Vitis AI) run only
//! graphs whose activations carry such fixed scales.

use std::path::Path;

use ort::value::TensorRef;

use super::encoder::{build_encoder_quant, EncoderDims, GraphPrecision, TensorSource, MEL_FRAMES};
use super::graph::ActivationQuant;
use crate::audio::{SAMPLE_RATE, WINDOW_SAMPLES};

/// Windows of calibration audio used at most (4 minutes).
const MAX_WINDOWS: usize = 8;

/// The log-mel windows of a 16 kHz WAV file (channels averaged), 30 s each, at most
/// [`MAX_WINDOWS`].
pub fn calibration_mels(path: &Path, n_mels: usize) -> Result<Vec<Vec<f32>>, String> {
    let what = |e: hound::Error| format!("calibration audio {}: {e}", path.display());
    let mut reader = hound::WavReader::open(path).map_err(what)?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE {
        return Err(format!(
            "calibration audio {}: {} Hz; it must be {SAMPLE_RATE} Hz (e.g. sox IN -r 16000 -c 1 OUT.wav)",
            path.display(),
            spec.sample_rate
        ));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>().map_err(what)?,
        hound::SampleFormat::Int => {
            let full = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 / full))
                .collect::<Result<_, _>>()
                .map_err(what)?
        }
    };
    let channels = spec.channels.max(1) as usize;
    let samples: Vec<f32> = interleaved
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / channels as f32)
        .collect();
    if samples.len() < SAMPLE_RATE as usize {
        return Err(format!(
            "calibration audio {}: {:.2} s; it needs at least 1 s of speech like what will be transcribed",
            path.display(),
            samples.len() as f64 / SAMPLE_RATE as f64
        ));
    }
    // Each 30 s of audio, and its first 8 s alone: most windows of short recordings are mostly
    // padding, whose activations a window full of speech never shows.
    let mel = npuwhisper_kernels::mel::LogMel::new(n_mels);
    Ok(samples
        .chunks(WINDOW_SAMPLES)
        .flat_map(|c| [c, &c[..c.len().min(SHORT_WINDOW)]])
        .take(MAX_WINDOWS)
        .map(|c| mel.compute(c, WINDOW_SAMPLES))
        .collect())
}

/// The audio of the calibration's short windows (8 s).
const SHORT_WINDOW: usize = 8 * SAMPLE_RATE as usize;

/// The range (min, max) of each activation of the int8 encoder graph (weights quantized, as
/// the graph that will use the ranges), over `mels`, on ONNX Runtime's CPU provider.
pub fn encoder_activation_ranges(
    w: &dyn TensorSource,
    dims: EncoderDims,
    mels: &[Vec<f32>],
) -> Result<Vec<(f32, f32)>, String> {
    // ONNX Runtime loaded first: building the graph calls it.
    let env = crate::runtime::environment()?;
    let model = build_encoder_quant(w, dims, GraphPrecision::Int8Qdq, ActivationQuant::Record)?;
    let err = |e: ort::Error| format!("calibrating the encoder graph: {e}");
    let builder = ort::session::Session::builder(env).map_err(err)?;
    let mut session = model.into_session(&builder).map_err(err)?;
    let mut ranges: Vec<(f32, f32)> = Vec::new();
    for mel in mels {
        if mel.len() != dims.n_mels * MEL_FRAMES {
            return Err(format!("a calibration window of {} values", mel.len()));
        }
        let input = TensorRef::from_array_view(([1, dims.n_mels, MEL_FRAMES], mel.as_slice())).map_err(err)?;
        let outputs = session.run(ort::inputs!["mel" => input]).map_err(err)?;
        let scalar = |name: String| -> Result<Option<f32>, String> {
            match outputs.get(&name) {
                None => Ok(None),
                Some(v) => Ok(Some(v.try_extract_tensor::<f32>().map_err(err)?.1[0])),
            }
        };
        let mut k = 0;
        while let (Some(lo), Some(hi)) = (scalar(format!("act_min_{k}"))?, scalar(format!("act_max_{k}"))?) {
            if k == ranges.len() {
                ranges.push((lo, hi));
            } else {
                ranges[k] = (ranges[k].0.min(lo), ranges[k].1.max(hi));
            }
            k += 1;
        }
    }
    if ranges.is_empty() || ranges.iter().any(|(lo, hi)| !lo.is_finite() || !hi.is_finite()) {
        return Err("calibrating the encoder graph gave no finite activation ranges".into());
    }
    Ok(ranges)
}
