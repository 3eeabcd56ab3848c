#!/usr/bin/env bash
# Benchmark of the npuwhisper command, all in one sitting (compare figures of the same run:
# the machines are shared and noisy):
# - files per second with --jobs 1 and --jobs 2 on the short set (manifest.tsv's clips);
# - whole-process time (start, model load, transcription, files written) on one file: the
#   command, gst-launch-1.0 with the plugin (filesrc ! decodebin ! npuwhisper ! srtenc !
#   filesink), and a faster-whisper process (import, load, transcribe; int8, greedy, the same
#   threads).
# Each figure is the median of --rounds runs, the three tools taking turns.
# Usage: scripts/bench-cli.sh [--model tiny.en] [--file jfk.wav] [--threads 2] [--rounds 3]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=tiny.en file=jfk.wav threads=2 rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --file) file=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--model NAME] [--file WAV] [--threads N] [--rounds N]" >&2; exit 2 ;;
  esac
done
eval_dir=${NPUWHISPER_SHARED_DIR:-$root/../shared}/eval/public
python=${NPUWHISPER_REFERENCE_PYTHON:-$root/.venv/bin/python}
models=${NPUWHISPER_MODELS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/npuwhisper/models}
cd "$root"
cargo build --release -q -p gst-plugin-npuwhisper -p npuwhisper-cli
cli=$root/target/release/npuwhisper
export GST_PLUGIN_PATH=$root/target/release
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mapfile -t clips < <(tail -n +2 "$eval_dir/manifest.tsv" | cut -f1 | sed "s|^|$eval_dir/|")
audio=$(tail -n +2 "$eval_dir/manifest.tsv" | awk -F'\t' '{s += $2} END {printf "%.1f", s}')

# seconds COMMAND...: wall seconds of COMMAND (output dropped)
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
median() { sort -g | awk '{v[NR] = $1} END {printf "%.3f", v[int((NR + 1) / 2)]}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

peer() {
  "$python" -c '
import sys
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
segments, _ = model.transcribe(sys.argv[2], beam_size=1, language="en")
print(" ".join(s.text for s in segments))' "$models/$model" "$1" "$threads"
}

declare -A runs
for _ in $(seq "$rounds"); do
  runs[j1]+="$(seconds "$cli" -q -m "$model" -t "$threads" -j 1 -o "$scratch/j1" "${clips[@]}") "
  runs[j2]+="$(seconds "$cli" -q -m "$model" -t "$threads" -j 2 -o "$scratch/j2" "${clips[@]}") "
  runs[cli]+="$(seconds "$cli" -q -m "$model" -t "$threads" -o "$scratch/one" "$eval_dir/$file") "
  runs[gst]+="$(seconds gst-launch-1.0 -q filesrc location="$eval_dir/$file" ! decodebin ! npuwhisper model="$model" threads="$threads" ! srtenc ! filesink location="$scratch/gst.srt") "
  runs[peer]+="$(seconds peer "$eval_dir/$file") "
done
med() { tr ' ' '\n' <<<"${runs[$1]}" | grep . | median; }
n=${#clips[@]}
echo "short set: $n files, $audio s of audio; $model, $threads threads; median of $rounds"
for j in j1 j2; do
  printf '  --jobs %s: %6.2f s  %5.2f files/s  %6.1fx realtime\n' "${j#j}" "$(med $j)" "$(div "$n" "$(med $j)")" "$(div "$audio" "$(med $j)")"
done
echo "one file, whole process: $file"
for k in cli gst peer; do
  case $k in cli) name="npuwhisper command" ;; gst) name="gst-launch-1.0 + plugin" ;; peer) name="faster-whisper (python)" ;; esac
  printf '  %-26s %6.2f s  (%.2fx the command)\n' "$name" "$(med $k)" "$(div "$(med $k)" "$(med cli)")"
done
