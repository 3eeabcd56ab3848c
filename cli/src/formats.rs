//! The transcript of one recording and the files written from it.

use std::fmt::Write as _;
use std::path::Path;

/// A cue (a phrase laid out for reading, or a word with `--word-timestamps`).
#[derive(Debug, Clone)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    /// Lines joined by "\n".
    pub text: String,
    pub avg_logprob: f64,
    pub language: String,
    pub words: Vec<Word>,
}

#[derive(Debug, Clone)]
pub struct Word {
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub cues: Vec<Cue>,
    /// Seconds of audio, when the input told.
    pub duration: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    Srt,
    Vtt,
    Txt,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Txt => "txt",
            Format::Json => "json",
        }
    }

    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "srt" => Some(Format::Srt),
            "vtt" => Some(Format::Vtt),
            "txt" => Some(Format::Txt),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn render(self, t: &Transcript, input: &Path) -> String {
        match self {
            Format::Srt => srt(t),
            Format::Vtt => vtt(t),
            Format::Txt => txt(t),
            Format::Json => json(t, input),
        }
    }
}

/// `HH:MM:SS<sep>mmm`.
fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Cue lines without blank lines, which would end the cue in SRT and WebVTT.
fn cue_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, c) in t.cues.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}\n{} --> {}",
            i + 1,
            timestamp(c.start, ','),
            timestamp(c.end, ',')
        );
        for line in cue_lines(&c.text) {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    out
}

fn vtt(t: &Transcript) -> String {
    // The header alone is a valid file: a silent recording.
    let mut out = String::from("WEBVTT\n\n");
    for c in &t.cues {
        let _ = writeln!(out, "{} --> {}", timestamp(c.start, '.'), timestamp(c.end, '.'));
        for line in cue_lines(&c.text) {
            let escaped = line.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            let _ = writeln!(out, "{escaped}");
        }
        out.push('\n');
    }
    out
}

/// One phrase a line.
fn txt(t: &Transcript) -> String {
    t.cues
        .iter()
        .map(|c| cue_lines(&c.text).collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

fn json(t: &Transcript, input: &Path) -> String {
    let segments: Vec<serde_json::Value> = t
        .cues
        .iter()
        .enumerate()
        .map(|(id, c)| {
            let words: Vec<serde_json::Value> = c
                .words
                .iter()
                .map(|w| serde_json::json!({"word": w.text, "start": w.start, "end": w.end, "probability": w.probability}))
                .collect();
            serde_json::json!({
                "id": id,
                "start": c.start,
                "end": c.end,
                "text": cue_lines(&c.text).collect::<Vec<_>>().join(" "),
                "lines": cue_lines(&c.text).collect::<Vec<_>>(),
                "avg_logprob": c.avg_logprob,
                "language": c.language,
                "words": words,
            })
        })
        .collect();
    let language = t.cues.first().map(|c| c.language.clone());
    let value = serde_json::json!({
        "input": input.to_string_lossy(),
        "duration": t.duration,
        "language": language,
        "text": t.cues.iter().map(|c| cue_lines(&c.text).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join(" "),
        "segments": segments,
    });
    serde_json::to_string_pretty(&value).expect("JSON values serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        let cue = |start, end, text: &str| Cue {
            start,
            end,
            text: text.into(),
            avg_logprob: -0.2,
            language: "en".into(),
            words: vec![],
        };
        Transcript {
            cues: vec![
                cue(0.5, 2.25, "Ask not\nwhat <your> country"),
                cue(3661.0, 3662.5, "can do & for you."),
            ],
            duration: Some(3663.0),
        }
    }

    #[test]
    fn srt_vtt_and_txt_layouts() {
        let t = transcript();
        assert_eq!(
            Format::Srt.render(&t, Path::new("a.wav")),
            "1\n00:00:00,500 --> 00:00:02,250\nAsk not\nwhat <your> country\n\n2\n01:01:01,000 --> 01:01:02,500\ncan do & for you.\n\n"
        );
        assert_eq!(
            Format::Vtt.render(&t, Path::new("a.wav")),
            "WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nAsk not\nwhat &lt;your&gt; country\n\n01:01:01.000 --> 01:01:02.500\ncan do &amp; for you.\n\n"
        );
        assert_eq!(
            Format::Txt.render(&t, Path::new("a.wav")),
            "Ask not what <your> country\ncan do & for you.\n"
        );
    }

    #[test]
    fn silence_gives_valid_empty_files() {
        let t = Transcript::default();
        assert_eq!(Format::Vtt.render(&t, Path::new("a.wav")), "WEBVTT\n\n");
        assert_eq!(Format::Srt.render(&t, Path::new("a.wav")), "");
        let json: serde_json::Value = serde_json::from_str(&Format::Json.render(&t, Path::new("a.wav"))).unwrap();
        assert_eq!(json["segments"], serde_json::json!([]));
    }
}
