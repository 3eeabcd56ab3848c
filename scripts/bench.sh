#!/usr/bin/env bash
# End-to-end benchmark of the plugin against the peer, faster-whisper, in one sitting on the
# same eval manifests, and one table of the figures and ratios.
#
#   scripts/bench.sh [--model tiny.en|base|DIR] [--manifest short|long|both] [--threads N]
#
# For each manifest (short: manifest.tsv, 23 clips, 153 s; long: manifest_long.tsv, 200 s):
#   - the plugin: examples/bench.rs in its own process (model loaded once, a 5 s warm-up, then
#     each file through filesrc ! decodebin ! npuwhisper ! appsink), with N compute threads;
#   - the peer: ../shared/bench/peer_faster_whisper.py --configs int8:1,float32:1 --threads N.
# Both score WER with Whisper's English normaliser and jiwer, and report the peak RSS of their
# process (the peer runs int8 then float32 in one process: its float32 peak includes int8's).
# Ratios: speed = plugin realtime factor / peer int8's (above 1: the plugin is faster);
# WER difference = plugin - peer float32 (the same arithmetic precision), in points;
# RSS = plugin / peer int8. The machines are shared: compare ratios from one run.
#
# Fetches what it needs: the models (scripts/fetch-models.sh) and the Python with
# faster-whisper, jiwer and whisper-normalizer (scripts/setup-reference.sh, .venv/), unless
# NPUWHISPER_REFERENCE_PYTHON names one. ../shared (or $NPUWHISPER_SHARED_DIR) provides the
# eval audio and the peer script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

usage() { sed -n '4p' "$0" | sed 's/^#   /usage: /' >&2; exit 2; }
model=tiny.en which=both threads=2
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=${2:?}; shift 2 ;;
    --manifest) which=${2:?}; shift 2 ;;
    --threads) threads=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "bench: unknown argument '$1'" >&2; usage ;;
  esac
done
case $which in
  short) manifests=(manifest.tsv) ;;
  long) manifests=(manifest_long.tsv) ;;
  both) manifests=(manifest.tsv manifest_long.tsv) ;;
  *) echo "bench: --manifest is short, long or both" >&2; exit 2 ;;
esac
case $threads in '' | *[!0-9]* | 0) echo "bench: --threads takes a positive number" >&2; exit 2 ;; esac

die() { echo "bench: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }

shared=${NPUWHISPER_SHARED_DIR:-$root/../shared}
eval_dir=$shared/eval/public
peer=$shared/bench/peer_faster_whisper.py
[ -d "$eval_dir" ] || die "$eval_dir is missing (the shared eval audio beside the checkout)"
[ -f "$peer" ] || die "$peer is missing"

command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
step "models"
scripts/fetch-models.sh >/dev/null
case $model in
  */*) model_dir=$model ;;
  *) model_dir=${NPUWHISPER_MODELS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/npuwhisper/models}/$model ;;
esac
[ -f "$model_dir/model.bin" ] || die "no model.bin in $model_dir"

step "Python with faster-whisper, jiwer and whisper-normalizer"
python=${NPUWHISPER_REFERENCE_PYTHON:-$root/.venv/bin/python}
has_packages() { "$python" -c 'import faster_whisper, jiwer, whisper_normalizer' 2>/dev/null; }
if ! has_packages; then
  [ -z "${NPUWHISPER_REFERENCE_PYTHON:-}" ] || die "$python lacks faster-whisper, jiwer or whisper-normalizer"
  scripts/setup-reference.sh >/dev/null
  has_packages || die "$python lacks faster-whisper, jiwer or whisper-normalizer"
fi
echo "$python" >&2

step "building examples/bench.rs (cargo build --release --example bench)"
cargo build --release --example bench --quiet
bench=${CARGO_TARGET_DIR:-$root/target}/release/examples/bench
# The plugin's compute threads: rayon's pool and matrixmultiply's.
export RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for m in "${manifests[@]}"; do
  step "$m: npuwhisper ($model, $threads threads)"
  out=$("$bench" --model "$model" --manifest "$eval_dir/$m" --python "$python")
  printf '%s\n' "$out" | sed '$d' >&2
  printf '%s\tplugin\t%s\n' "$m" "$(printf '%s\n' "$out" | tail -n 1)" >>"$results"
  step "$m: faster-whisper ($model, int8 and float32, $threads threads)"
  out=$("$python" "$peer" --model "$model_dir" --manifest "$eval_dir/$m" --threads "$threads" \
    --configs int8:1,float32:1)
  printf '%s\n' "$out" | sed '$d' >&2
  printf '%s\tpeer\t%s\n' "$m" "$(printf '%s\n' "$out" | tail -n 1)" >>"$results"
done

echo >&2
"$python" - "$results" "$model" "$threads" <<'PY'
import json, sys

path, model, threads = sys.argv[1:4]
rows, plugin, peer = [], {}, {}
for line in open(path, encoding="utf-8"):
    manifest, kind, data = line.rstrip("\n").split("\t", 2)
    data = json.loads(data)
    if kind == "plugin":
        plugin[manifest] = data
        rows.append((manifest, "npuwhisper", data))
    else:
        for r in data["results"]:
            peer[(manifest, r["config"].split(":")[0])] = r
            rows.append((manifest, "faster-whisper " + r["config"], r))

def pct(w):
    return "n/a" if w is None else f"{100 * w:.2f}"

print(f"model {model}, {threads} threads; realtime factor = audio s / wall s (higher is faster)")
head = ("manifest", "engine/config", "audio s", "wall s", "x realtime", "WER %", "peak RSS MB")
fmt = "{:<18} {:<25} {:>8} {:>8} {:>10} {:>7} {:>12}"
print(fmt.format(*head))
for manifest, engine, r in rows:
    print(fmt.format(manifest, engine, f"{r['audio_s']:.1f}", f"{r['wall_s']:.2f}",
                     f"{r['rtf_x']:.2f}", pct(r["wer"]), f"{r['peak_rss_mb']:.0f}"))
print()
for manifest, p in plugin.items():
    int8, f32 = peer.get((manifest, "int8")), peer.get((manifest, "float32"))
    parts = []
    if int8:
        parts.append(f"speed vs int8 {p['rtf_x'] / int8['rtf_x']:.2f}x")
    if f32 and p["wer"] is not None:
        parts.append(f"WER vs float32 {100 * (p['wer'] - f32['wer']):+.2f} points")
    if int8:
        parts.append(f"RSS vs int8 {p['peak_rss_mb'] / int8['peak_rss_mb']:.2f}x")
    print(f"{manifest:<18} npuwhisper: " + ", ".join(parts))
    if p.get("windows"):
        w = p["wall_s"]
        print(f"{'':<18} npuwhisper stages: encoder {p['encoder_s']:.2f} s ({100 * p['encoder_s'] / w:.0f} % of wall), "
              f"decoder {p['decoder_s']:.2f} s ({100 * p['decoder_s'] / w:.0f} %), {p['windows']} windows; "
              f"model load {p['model_load_s']:.2f} s (not in wall)")
PY
