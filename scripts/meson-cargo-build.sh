#!/usr/bin/env bash
# Called by meson.build: cargo build --release of the plugin and the npuwhisper command, then
# copies them to meson's output paths.
# Usage: meson-cargo-build.sh CARGO MANIFEST TARGET_DIR PLUGIN_OUTPUT COMMAND_OUTPUT
set -euo pipefail
cargo=$1 manifest=$2 target_dir=$3 plugin=$4 command=$5
"$cargo" build --release --manifest-path "$manifest" --target-dir "$target_dir" -p gst-plugin-npuwhisper -p npuwhisper-cli
for pair in "libgstnpuwhisper.so:$plugin" "npuwhisper:$command"; do
  built=$target_dir/release/${pair%%:*} out=${pair#*:}
  cp -f "$built" "$out.tmp"
  mv -f "$out.tmp" "$out"
done
