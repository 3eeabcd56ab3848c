#!/usr/bin/env bash
# Set up everything on Debian 12 / Ubuntu and transcribe a sample recording to SRT:
# system packages, the plugin and the npuwhisper command (cargo build --release), the Whisper models, the reference
# venv used by the tests and the benchmark. Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")"

step() { echo; echo "==> $*"; }

command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust 1.95 with rustup" >&2; exit 1; }

step "system packages"
scripts/install-deps.sh
step "building the plugin and the npuwhisper command (cargo build --release)"
cargo build --release -p gst-plugin-npuwhisper -p npuwhisper-cli
step "building gst-plugins-rs' closed caption plugin for pipelines/caption-video.sh"
cargo build --release -p npuwhisper-closedcaption
step "models"
scripts/fetch-models.sh
step "reference environment for tests and benchmark (.venv)"
scripts/setup-reference.sh

sample=../shared/eval/public/jfk.wav
if [ ! -f "$sample" ]; then
  echo
  echo "Set-up done. No sample recording at $sample (the shared evaluation set beside the checkout)."
  echo "Transcribe one of your own with:  target/release/npuwhisper -o out RECORDING"
  exit 0
fi
step "transcribing $sample with the default model"
target/release/npuwhisper --output-dir out "$sample"
echo "--- out/jfk.srt"
cat out/jfk.srt
