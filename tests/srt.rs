//! `pipelines/file-to-srt.sh` on the long-form file: a valid SRT whose cues follow the speech.

mod common;

use std::process::Command;

use common::*;

fn parse_time(s: &str) -> f64 {
    let (hms, ms) = s.trim().split_once(',').expect("SRT time has a comma");
    let p: Vec<f64> = hms.split(':').map(|v| v.parse().unwrap()).collect();
    p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().unwrap() / 1000.0
}

/// `(index, start, end, text)` of each cue; panics on anything that is not SRT.
fn parse_srt(text: &str) -> Vec<(usize, f64, f64, String)> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut lines = block.trim_matches('\n').lines();
            let index = lines.next().unwrap().trim().parse().expect("cue index");
            let (a, b) = lines.next().unwrap().split_once(" --> ").expect("cue timing line");
            let body = lines.collect::<Vec<_>>().join(" ");
            (index, parse_time(a), parse_time(b), body)
        })
        .collect()
}

#[test]
fn long_form_srt_is_valid_and_timed() {
    if !common::require(&[common::Need::Shared]) {
        return;
    }
    let input = eval_file("long_lj001_1-20.wav");
    let out = tempfile_dir().join("long.srt");
    let status = Command::new("bash")
        .arg(repo().join("pipelines/file-to-srt.sh"))
        .arg(&input)
        .arg(&out)
        .status()
        .expect("file-to-srt.sh runs");
    assert!(status.success(), "file-to-srt.sh failed: {status}");
    let srt = std::fs::read_to_string(&out).unwrap();
    let cues = parse_srt(&srt);
    println!("{srt}");
    assert!(!cues.is_empty(), "no cues");

    let audio_end = read_wav(&input).len() as f64 / 16000.0;
    for (i, c) in cues.iter().enumerate() {
        assert_eq!(c.0, i + 1, "cue numbers run 1, 2, 3…");
        assert!(c.1 < c.2, "cue {} has no duration", c.0);
        assert!(
            c.2 <= audio_end + 0.001,
            "cue {} ends at {} after the audio ({audio_end})",
            c.0,
            c.2
        );
        assert!(!c.3.trim().is_empty(), "cue {} is empty", c.0);
        if i > 0 {
            assert!(
                c.1 >= cues[i - 1].2 - 0.0005,
                "cue {} overlaps or precedes cue {}",
                c.0,
                c.0 - 1
            );
        }
    }

    // The file is the twenty utterances of manifest.tsv, each followed by a 0.6 s pause.
    let mut starts = Vec::new();
    let mut t = 0.0;
    for (file, duration, _) in manifest("manifest.tsv")
        .into_iter()
        .filter(|(f, _, _)| f.starts_with("LJ001-"))
    {
        starts.push((file, t, t + duration));
        t += duration + 0.6;
    }
    assert_eq!(starts.len(), 20);
    assert!(
        (t - audio_end).abs() < 0.05,
        "utterance times do not add up to the file: {t} vs {audio_end}"
    );
    let mut well_started = 0;
    for (file, start, end) in &starts {
        assert!(
            cues.iter().any(|c| c.1 < *end && c.2 > *start),
            "no cue overlaps {file} ({start:.2}–{end:.2} s)"
        );
        if cues.iter().any(|c| (c.1 - start).abs() <= 1.0) {
            well_started += 1;
        }
    }
    println!("{well_started} of 20 utterances have a cue starting within 1 s of them");
    assert!(
        well_started >= 15,
        "only {well_started} of 20 utterances have a cue starting within 1 s"
    );
}
