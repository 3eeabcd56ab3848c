#!/usr/bin/env bash
# Burn the transcript into a video: npuwhisper transcribes the audio to SubRip first (file mode,
# whole windows: the most accurate text), then textoverlay draws each phrase on the frames it
# is spoken over, and the video (H.264) is written with the audio (AAC) to MP4 or Matroska.
# Two passes because the overlay needs each frame's text before drawing it, and the text of a
# window comes up to 30 s after its first frame: one pass would hold that much raw video.
# Usage: pipelines/burn-captions.sh INPUT OUTPUT.mp4|OUTPUT.mkv [PROPERTY=VALUE...]
#   e.g. pipelines/burn-captions.sh talk.mp4 talk-captioned.mp4 model=base
set -euo pipefail
# shellcheck source=pipelines/lib.sh
. "$(dirname "$0")/lib.sh"
npuwhisper_setup "$@"
npuwhisper_muxer mp4 mkv
npuwhisper_require "gstreamer1.0-plugins-ugly/-good/-bad/-libav: run scripts/install-deps.sh" \
  x264enc h264parse avenc_aac aacparse textoverlay subparse srtenc "$npw_mux"

npuwhisper_require_streams audio video
npuwhisper_tmp_output
npuwhisper_tmpfile .srt
srt=$npw_made
srt_loc=$(npuwhisper_gst_escape "$srt")
if ! npuwhisper_run filesrc location="$npw_input_loc" ! decodebin ! npuwhisper "${npw_props[@]}" \
    ! srtenc ! filesink location="$srt_loc"; then
  echo "$npw_prog: transcribing '$npw_input' failed" >&2
  exit 1
fi
npw_doing="burning the captions into"
npuwhisper_launch \
  filesrc location="$npw_input_loc" ! decodebin name=input \
  filesrc location="$srt_loc" ! subparse ! queue ! overlay.text_sink \
  input. ! queue ! videoconvert ! textoverlay name=overlay valignment=bottom \
    shaded-background=true ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=veryfast ! h264parse ! queue ! mux. \
  input. ! queue ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. \
  "$npw_mux" name=mux ! filesink location="$npw_tmp_loc"
