#!/usr/bin/env bash
# Create .venv/ at the repository root with the reference implementation the tests and the
# benchmark compare against: faster-whisper (CTranslate2) for log-mel and encoder states,
# jiwer + whisper-normalizer for Whisper-normalized WER (the same packages as
# ../shared/bench/setup_peer.sh installs); srt and webvtt-py, independent parsers of the
# subtitle files the npuwhisper command writes. Idempotent: does nothing when they are there.
# Usage: scripts/setup-reference.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
reqs=(faster-whisper==1.2.1 jiwer==4.0.0 whisper-normalizer srt==3.5.3 webvtt-py==0.6.0)

installed() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
assert version("faster-whisper") == "1.2.1"
assert version("jiwer") == "4.0.0"
assert version("srt") == "3.5.3"
assert version("webvtt-py") == "0.6.0"
version("whisper-normalizer")
PY
}

if installed; then
  echo "reference venv: already set up" >&2
else
  if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv" || {
      rm -rf "$venv"
      echo "setup-reference: could not create $venv (Debian: apt-get install python3-venv, see scripts/install-deps.sh)" >&2
      exit 1
    }
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"
  installed || { echo "setup-reference: packages missing after pip install" >&2; exit 1; }
fi

# Ray and tqdm for distributed/ray_transcribe.py (README "More than one machine"), with every
# dependency pinned by version and sha256 in distributed/requirements.txt.
ray_installed() {
  "$venv/bin/python" -c 'from importlib.metadata import version; assert version("ray") == "2.60.0"' 2>/dev/null
}
if ray_installed; then
  echo "ray: already installed" >&2
else
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
    -r "$root/distributed/requirements.txt"
  ray_installed || { echo "setup-reference: ray missing after pip install" >&2; exit 1; }
fi
echo "python: $venv/bin/python"
