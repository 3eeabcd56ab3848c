#!/usr/bin/env bash
# Make the harder evaluation sets from ../shared/eval/public with sox: quiet and mixed-level
# speech, an hour of long-form, and non-speech (noise, music, tones, hum, DC). Used by the
# tests (tests/vad.rs) and for benchmark figures beside faster-whisper's.
#   scripts/eval-sets.sh OUTDIR [SET...]     sets: quiet long hour nonspeech (default: all)
# Writes OUTDIR/<set>/ with the audio and a manifest.tsv (file, duration, reference) in the
# eval set's format; non-speech files have an empty reference. Deterministic: sox's dither and
# noise are seeded (-R), so the same files come out every time. A set already made is kept.
set -euo pipefail

out=${1:?usage: scripts/eval-sets.sh OUTDIR [SET...]}
shift
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(quiet long hour nonspeech)
eval=${NPUWHISPER_SHARED_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared}/eval/public
[ -f "$eval/manifest.tsv" ] || { echo "eval-sets: $eval/manifest.tsv not found" >&2; exit 1; }
command -v sox >/dev/null || { echo "eval-sets: sox not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
sx() { sox -R -V1 "$@"; }

# begin SET: a temp dir to build in; done_set moves it into place whole.
begin() { rm -rf "$out/.$1.tmp"; mkdir -p "$out/.$1.tmp"; printf 'file\tduration_s\ttext\n' > "$out/.$1.tmp/manifest.tsv"; }
done_set() { rm -rf "$out/$1"; mv "$out/.$1.tmp" "$out/$1"; echo "eval-sets: $out/$1" >&2; }
row() { printf '%s\t%s\t%s\n' "$2" "$(soxi -D "$out/.$1.tmp/$2")" "$3" >> "$out/.$1.tmp/manifest.tsv"; }

# The short set turned down 40 and 50 dB (phone and web recordings often peak that low).
make_quiet() {
  begin quiet
  tail -n +2 "$eval/manifest.tsv" | while IFS=$'\t' read -r file _ text; do
    for g in 40 50; do
      sx "$eval/$file" -b 16 "$out/.quiet.tmp/m${g}_$file" gain -$g
      row quiet "m${g}_$file" "$text"
    done
  done
  done_set quiet
}

# The twenty LJ clips joined with 0.6 s pauses, as long_lj001_1-20.wav is, with every other
# one turned down 35 dB; and long_lj001_1-20.wav as FLAC (not in the manifest).
make_long() {
  begin long
  local parts=() refs=() i=0 t="$out/.long.tmp"
  sx -n -r 16000 -c 1 -b 16 "$t/pause.wav" trim 0 0.6
  while IFS=$'\t' read -r file _ text; do
    case $file in LJ001-*) ;; *) continue ;; esac
    if [ $((i % 2)) -eq 1 ]; then sx "$eval/$file" -b 16 "$t/part$i.wav" gain -35; else cp "$eval/$file" "$t/part$i.wav"; fi
    parts+=("$t/part$i.wav" "$t/pause.wav")
    refs+=("$text")
    i=$((i + 1))
  done < <(tail -n +2 "$eval/manifest.tsv")
  sx "${parts[@]}" "$t/mixed_levels.wav"
  rm -f "$t"/part*.wav "$t/pause.wav"
  row long mixed_levels.wav "${refs[*]}"
  # The same samples as long_lj001_1-20.wav in another container and codec.
  sx "$eval/long_lj001_1-20.wav" "$t/long_lj001_1-20.flac"
  done_set long
}

# long_lj001_1-20.wav 25 times over: an hour of repetitive long-form.
make_hour() {
  begin hour
  local ref copies=()
  ref=$(awk -F'\t' '$1 == "long_lj001_1-20.wav" { print $3 }' "$eval/manifest_long.tsv")
  for _ in $(seq 25); do copies+=("$eval/long_lj001_1-20.wav"); done
  sx "${copies[@]}" "$out/.hour.tmp/hour.wav"
  local refs=()
  for _ in $(seq 25); do refs+=("$ref"); done
  row hour hour.wav "${refs[*]}"
  done_set hour
}

# What must give no words: noise, music, tones, hum, a DC offset.
make_nonspeech() {
  begin nonspeech
  local t="$out/.nonspeech.tmp" f=(-r 16000 -c 1 -b 16)
  sx -n "${f[@]}" "$t/white_noise.wav" synth 300 whitenoise vol 0.3
  sx -n "${f[@]}" "$t/pink_noise.wav" synth 300 pinknoise vol 0.3
  # Plucked chords, C major then A minor, F major, G major, 2 s each, for 2 minutes.
  sx -n "${f[@]}" "$t/chord.wav" synth 2 pluck C3 pluck E3 pluck G3 pluck C4 vol 0.2
  sx -n "${f[@]}" "$t/chord2.wav" synth 2 pluck A2 pluck E3 pluck A3 pluck C4 vol 0.2
  sx -n "${f[@]}" "$t/chord3.wav" synth 2 pluck F2 pluck C3 pluck F3 pluck A3 vol 0.2
  sx -n "${f[@]}" "$t/chord4.wav" synth 2 pluck G2 pluck D3 pluck G3 pluck B3 vol 0.2
  sx "$t/chord.wav" "$t/chord2.wav" "$t/chord3.wav" "$t/chord4.wav" "$t/bar.wav"
  sx "$t/bar.wav" "$t/chord_music.wav" repeat 14
  rm -f "$t"/chord.wav "$t"/chord[234].wav "$t/bar.wav"
  sx -n "${f[@]}" "$t/sine_sweep.wav" synth 120 sine 100-7000 vol 0.5
  sx -n "${f[@]}" "$t/dc_offset.wav" synth 60 sine 0 vol 0 dcshift 0.25
  sx -n "${f[@]}" "$t/hum_50hz.wav" synth 60 sine 50 sine 150 vol 0.3
  local n
  for n in white_noise pink_noise chord_music sine_sweep dc_offset hum_50hz; do row nonspeech "$n.wav" ""; done
  done_set nonspeech
}

for s in "${sets[@]}"; do
  if [ -f "$out/$s/manifest.tsv" ]; then echo "eval-sets: $out/$s already made" >&2; continue; fi
  case $s in
    quiet) make_quiet ;;
    long) make_long ;;
    hour) make_hour ;;
    nonspeech) make_nonspeech ;;
    *) echo "eval-sets: unknown set $s" >&2; exit 2 ;;
  esac
done
