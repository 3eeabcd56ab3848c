#!/usr/bin/env bash
# Transcribe a video's audio with npuwhisper and write it to Matroska with the transcript as a
# subtitle track (S_TEXT/UTF8, one entry per phrase or word, timed) beside the video (H.264)
# and the audio (AAC), re-encoded from the decoded streams.
# Usage: pipelines/subtitle-track.sh INPUT OUTPUT.mkv [PROPERTY=VALUE...]
#   e.g. pipelines/subtitle-track.sh talk.mp4 talk.mkv model=base language=auto
set -euo pipefail
# shellcheck source=pipelines/lib.sh
. "$(dirname "$0")/lib.sh"
npuwhisper_setup "$@"
npuwhisper_muxer mkv
npuwhisper_require "gstreamer1.0-plugins-ugly/-good/-libav: run scripts/install-deps.sh" \
  x264enc h264parse avenc_aac aacparse matroskamux

# The muxer waits for the text of each window (up to 30 s, and a few windows in flight): the
# encoded video and audio wait in unbounded queues (compressed, so small), not the decoder.
unbounded="max-size-time=0 max-size-buffers=0 max-size-bytes=0"
npuwhisper_require_streams audio video
npuwhisper_tmp_output
# shellcheck disable=SC2086 # $unbounded is several properties
npuwhisper_launch \
  filesrc location="$npw_input_loc" ! decodebin name=input \
  input. ! queue ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=veryfast ! h264parse ! queue $unbounded ! mux.video_0 \
  input. ! queue ! tee name=audio \
  audio. ! queue ! npuwhisper "${npw_props[@]}" ! queue ! mux.subtitle_0 \
  audio. ! queue ! audioconvert ! avenc_aac ! aacparse ! queue $unbounded ! mux.audio_0 \
  matroskamux name=mux ! filesink location="$npw_tmp_loc"
