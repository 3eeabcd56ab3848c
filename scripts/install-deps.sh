#!/usr/bin/env bash
# Install the system packages npuwhisper needs on Debian 12 / Ubuntu: GStreamer development
# files (to build the plugin), the GStreamer tools and plugins the pipelines use (decodebin's
# demuxers and decoders; srtenc and webvttenc are in gstreamer1.0-plugins-bad, plugin
# "subenc"; x264enc, the H.264 encoder that writes closed captions into the stream, in -ugly;
# gst-discoverer-1.0, which the video pipelines ask for the input's streams, in -base-apps),
# meson + ninja (install step), Python's venv and pip (models, references), and pango + cairo
# development files for the crates in interop/ (gst-plugin-closedcaption's transcriberbin and
# caption overlays link them), and sox, which makes the test audio (gain, noise, music, joins).
# Skips apt entirely when every package is already installed.
set -euo pipefail

packages=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  meson ninja-build pkg-config python3-venv python3-pip unzip sox
  libpango1.0-dev libcairo2-dev
)

missing=()
for p in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed" >&2
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
