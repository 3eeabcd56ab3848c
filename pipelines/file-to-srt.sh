#!/usr/bin/env bash
# Transcribe a media file (anything decodebin plays) to SubRip subtitles with npuwhisper.
# Usage: pipelines/file-to-srt.sh INPUT OUTPUT.srt [PROPERTY=VALUE...]
#   e.g. pipelines/file-to-srt.sh talk.mp4 talk.srt model=base language=auto
set -euo pipefail
# shellcheck source=pipelines/lib.sh
. "$(dirname "$0")/lib.sh"
npuwhisper_file_to_subtitles srt "$@"
