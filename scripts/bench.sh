#!/usr/bin/env bash
# End-to-end benchmark of the plugin against the peer, faster-whisper, in one sitting on the
# same eval manifests, and one table of the figures and ratios.
#
#   scripts/bench.sh [--model tiny.en|base|DIR[,...]] [--manifest short|long|both] [--threads N] [--isa native|avx512|avx2-vnni|avx2[,...]] [--backend cpu|onnxruntime|onnxruntime-decoder[,...]] [--context full|auto|fit[,...]]
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
# --isa holds both sides to one SIMD level (several, comma-separated, run one after the other;
# default native, the best the CPU has): the plugin through NPUWHISPER_ISA, the peer through
# CTranslate2's, oneMKL's and oneDNN's own switches (avx2: CT2_FORCE_CPU_ISA=AVX2
# MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2; avx2-vnni, AVX2 with AVX-VNNI as Intel's
# client CPUs since Alder Lake have it: CT2_FORCE_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2_E1
# ONEDNN_MAX_CPU_ISA=AVX2_VNNI; avx512: CT2_FORCE_CPU_ISA=AVX512
# ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI). --model also takes a comma-separated list.
#
# --backend runs the plugin once per backend (default cpu; `cpu,onnxruntime` prints ONNX
# Runtime's CPU provider beside the CPU kernels, same files, same run): with onnxruntime the
# encoder runs as an ONNX graph on ONNX Runtime, the decoder stays on the CPU kernels; with
# onnxruntime-decoder both stages run on ONNX Runtime (onnxruntime-stages=encoder-decoder).
# --context runs it once per encoder context too (default full; `full,auto` prints the opt-in
# shorter context beside the full one, with its speed against full).
#
# Whole processes too, as a user waits for them (start, model load, transcription), on jfk.wav
# and the long-form file: gst-launch-1.0 filesrc ! decodebin ! npuwhisper ! fakesink against a
# Python process that loads faster-whisper int8 and transcribes; each after one untimed run (so
# the plugin's weight cache and GStreamer's registry exist, and the files are in the page cache).
#
# Fetches what it needs: the models (scripts/fetch-models.sh) and the Python with
# faster-whisper, jiwer and whisper-normalizer (scripts/setup-reference.sh, .venv/), unless
# NPUWHISPER_REFERENCE_PYTHON names one. ../shared (or $NPUWHISPER_SHARED_DIR) provides the
# eval audio and the peer script.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

usage() { sed -n '4p' "$0" | sed 's/^#   /usage: /' >&2; exit 2; }
models=tiny.en which=both threads=2 isas=native backends=cpu contexts=full
while [ $# -gt 0 ]; do
  case $1 in
    --model) models=${2:?}; shift 2 ;;
    --isa) isas=${2:?}; shift 2 ;;
    --manifest) which=${2:?}; shift 2 ;;
    --threads) threads=${2:?}; shift 2 ;;
    --backend) backends=${2:?}; shift 2 ;;
    --context) contexts=${2:?}; shift 2 ;;
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
IFS=, read -r -a isa_list <<<"$isas"
IFS=, read -r -a model_list <<<"$models"
IFS=, read -r -a backend_list <<<"$backends"
IFS=, read -r -a context_list <<<"$contexts"
for c in "${context_list[@]}"; do
  case $c in full | auto | fit) ;; *) echo "bench: --context takes full, auto or fit" >&2; exit 2 ;; esac
done
for b in "${backend_list[@]}"; do
  case $b in cpu | onnxruntime | onnxruntime-decoder) ;; *) echo "bench: --backend takes cpu, onnxruntime or onnxruntime-decoder" >&2; exit 2 ;; esac
done
for isa in "${isa_list[@]}"; do
  case $isa in native | avx512 | avx2-vnni | avx2) ;; *) echo "bench: --isa takes native, avx512, avx2-vnni or avx2" >&2; exit 2 ;; esac
done

# isa_env ISA: the environment holding the plugin and the peer to that SIMD level.
isa_env() {
  case $1 in
    native) ;;
    avx512) echo NPUWHISPER_ISA=avx512 CT2_FORCE_CPU_ISA=AVX512 ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI ;;
    avx2-vnni) echo NPUWHISPER_ISA=avx2-vnni CT2_FORCE_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2_E1 ONEDNN_MAX_CPU_ISA=AVX2_VNNI ;;
    avx2) echo NPUWHISPER_ISA=avx2 CT2_FORCE_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ;;
  esac
}

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
model_dir_of() {
  case $1 in
    */*) echo "$1" ;;
    *) echo "${NPUWHISPER_MODELS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/npuwhisper/models}/$1" ;;
  esac
}
for model in "${model_list[@]}"; do
  [ -f "$(model_dir_of "$model")/model.bin" ] || die "no model.bin in $(model_dir_of "$model")"
done

step "Python with faster-whisper, jiwer and whisper-normalizer"
python=${NPUWHISPER_REFERENCE_PYTHON:-$root/.venv/bin/python}
has_packages() { "$python" -c 'import faster_whisper, jiwer, whisper_normalizer' 2>/dev/null; }
if ! has_packages; then
  [ -z "${NPUWHISPER_REFERENCE_PYTHON:-}" ] || die "$python lacks faster-whisper, jiwer or whisper-normalizer"
  scripts/setup-reference.sh >/dev/null
  has_packages || die "$python lacks faster-whisper, jiwer or whisper-normalizer"
fi
echo "$python" >&2

step "building examples/bench.rs and the plugin (cargo build --release --example bench --lib)"
cargo build --release --example bench --lib --quiet
target=${CARGO_TARGET_DIR:-$root/target}/release
bench=$target/examples/bench
# The plugin's compute threads: rayon's pool and matrixmultiply's.
export RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads

results=$(mktemp)
trap 'rm -f "$results"' EXIT
# The peer as a whole process: load int8, transcribe one file, print the text.
peer_once='import sys
from faster_whisper import WhisperModel
m = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]), num_workers=1)
segments, _ = m.transcribe(sys.argv[2], beam_size=1, language="en")
print(" ".join(s.text.strip() for s in segments))'
# Wall seconds and peak RSS of a command, as JSON.
timer='import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
if rc:
    sys.exit(f"bench: {sys.argv[1]} failed ({rc}): {sys.argv[2:]}")
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"what": sys.argv[1], "wall_s": wall, "peak_rss_mb": rss}))'
# whole TAG COMMAND...: runs COMMAND once untimed, then once timed, recording wall s and peak RSS.
whole() {
  "$python" -c "$timer" "$@" >/dev/null || exit 1
  printf '%s\twhole\t%s\n' "$key" "$("$python" -c "$timer" "$@")" >>"$results"
}
for isa in "${isa_list[@]}"; do
  for model in "${model_list[@]}"; do
    model_dir=$(model_dir_of "$model")
    env=$(isa_env "$isa")
    for m in "${manifests[@]}"; do
      key="$isa	$model	$m"
      for backend in "${backend_list[@]}"; do
        for context in "${context_list[@]}"; do
          step "$isa, $m: npuwhisper ($model, backend $backend, context $context, $threads threads) ${env:-}"
          case $backend in
            onnxruntime-decoder) set_props=backend=onnxruntime,onnxruntime-stages=encoder-decoder ;;
            *) set_props=backend=$backend ;;
          esac
          label=$backend
          if [ "$context" != full ]; then
            set_props+=,context=$context
            label+=" context=$context"
          fi
          out=$(env $env "$bench" --model "$model" --manifest "$eval_dir/$m" --python "$python" --set "$set_props")
          printf '%s\n' "$out" | sed '$d' >&2
          printf '%s\tplugin-%s\t%s\n' "$key" "$label" "$(printf '%s\n' "$out" | tail -n 1)" >>"$results"
        done
      done
      step "$isa, $m: faster-whisper ($model, int8 and float32, $threads threads) ${env:-}"
      out=$(env $env "$python" "$peer" --model "$model_dir" --manifest "$eval_dir/$m" --threads "$threads" \
        --configs int8:1,float32:1)
      printf '%s\n' "$out" | sed '$d' >&2
      printf '%s\tpeer\t%s\n' "$key" "$(printf '%s\n' "$out" | tail -n 1)" >>"$results"
    done
    for f in jfk.wav long_lj001_1-20.wav; do
      key="$isa	$model	$f"
      step "$isa, $f: whole processes, npuwhisper and faster-whisper int8 ($model)"
      whole npuwhisper env $env GST_PLUGIN_PATH="$target" gst-launch-1.0 -q filesrc location="$eval_dir/$f" ! decodebin \
        ! npuwhisper model="$model_dir" ! fakesink
      whole "faster-whisper int8" env $env "$python" -c "$peer_once" "$model_dir" "$eval_dir/$f" "$threads"
    done
  done
done

echo >&2
"$python" - "$results" "$threads" <<'PY'
import json, sys

path, threads = sys.argv[1:3]
rows, plugin, peer, whole = [], {}, {}, {}
for line in open(path, encoding="utf-8"):
    isa, model, manifest, kind, data = line.rstrip("\n").split("\t", 4)
    data, key = json.loads(data), (isa, model, manifest)
    if kind.startswith("plugin-"):
        backend = kind.removeprefix("plugin-")
        plugin[key + (backend,)] = data
        rows.append((key, "npuwhisper" if backend == "cpu" else "npuwhisper " + backend, data))
    elif kind == "peer":
        for r in data["results"]:
            peer[key + (r["config"].split(":")[0],)] = r
            rows.append((key, "faster-whisper " + r["config"], r))
    else:
        whole.setdefault(key, []).append(data)

def pct(w):
    return "n/a" if w is None else f"{100 * w:.2f}"

print(f"{threads} threads; realtime factor = audio s / wall s (higher is faster); model load excluded")
head = ("isa", "model", "manifest", "engine/config", "audio s", "wall s", "x realtime", "WER %", "peak RSS MB")
fmt = "{:<7} {:<8} {:<18} {:<25} {:>8} {:>8} {:>10} {:>7} {:>12}"
print(fmt.format(*head))
for (isa, model, manifest), engine, r in rows:
    print(fmt.format(isa, model, manifest, engine, f"{r['audio_s']:.1f}", f"{r['wall_s']:.2f}",
                     f"{r['rtf_x']:.2f}", pct(r["wer"]), f"{r['peak_rss_mb']:.0f}"))
print()
for (*key, backend), p in plugin.items():
    key = tuple(key)
    int8, f32 = peer.get(key + ("int8",)), peer.get(key + ("float32",))
    parts = []
    if int8:
        parts.append(f"speed vs int8 {p['rtf_x'] / int8['rtf_x']:.2f}x")
    if f32 and p["wer"] is not None:
        parts.append(f"WER vs float32 {100 * (p['wer'] - f32['wer']):+.2f} points")
    if int8:
        parts.append(f"RSS vs int8 {p['peak_rss_mb'] / int8['peak_rss_mb']:.2f}x")
    cpu = plugin.get(key + ("cpu",))
    if backend != "cpu" and cpu:
        parts.append(f"speed vs backend=cpu {p['rtf_x'] / cpu['rtf_x']:.2f}x")
    label = " ".join(key)
    name = "npuwhisper" if backend == "cpu" else f"npuwhisper {backend}"
    print(f"{label:<38} {name}: " + ", ".join(parts))
    if p.get("windows"):
        w = p["wall_s"]
        print(f"{'':<38} {name} stages: encoder {p['encoder_s']:.2f} s ({100 * p['encoder_s'] / w:.0f} % of wall), "
              f"decoder {p['decoder_s']:.2f} s ({100 * p['decoder_s'] / w:.0f} %), {p['windows']} windows; "
              f"model load {p['model_load_s']:.2f} s (not in wall)")
if whole:
    print()
    print("whole processes (start, model load, transcription), int8 greedy:")
    fmt = "{:<7} {:<8} {:<22} {:<22} {:>8} {:>12}"
    print(fmt.format("isa", "model", "file", "engine", "wall s", "peak RSS MB"))
    for (isa, model, f), runs in whole.items():
        for r in runs:
            print(fmt.format(isa, model, f, r["what"], f"{r['wall_s']:.2f}", f"{r['peak_rss_mb']:.0f}"))
        if len(runs) == 2:
            print(f"{'':<40} npuwhisper speed vs faster-whisper: {runs[1]['wall_s'] / runs[0]['wall_s']:.2f}x")
PY
