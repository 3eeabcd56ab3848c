#!/usr/bin/env bash
# Called by meson.build: cargo build --release, then copy the plugin to meson's output path.
# Usage: meson-cargo-build.sh CARGO MANIFEST TARGET_DIR OUTPUT
set -euo pipefail
cargo=$1 manifest=$2 target_dir=$3 output=$4
"$cargo" build --release --manifest-path "$manifest" --target-dir "$target_dir" -p gst-plugin-npuwhisper
cp -f "$target_dir/release/libgstnpuwhisper.so" "$output.tmp"
mv -f "$output.tmp" "$output"
