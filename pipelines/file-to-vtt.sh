#!/usr/bin/env bash
# Transcribe a media file (anything decodebin plays) to WebVTT subtitles with npuwhisper.
# Usage: pipelines/file-to-vtt.sh INPUT OUTPUT.vtt [PROPERTY=VALUE...]
#   e.g. pipelines/file-to-vtt.sh talk.mp4 talk.vtt model=base language=auto
set -euo pipefail
# shellcheck source=pipelines/lib.sh
. "$(dirname "$0")/lib.sh"
npuwhisper_file_to_subtitles vtt "$@"
