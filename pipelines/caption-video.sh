#!/usr/bin/env bash
# Closed captions into a video, as a live broadcast captioner would: the audio is transcribed
# paced by the clock with npuwhisper in live mode (captions within its `latency`), the text is
# typed as CEA-608 roll-up captions (tttocea608), attached to the video frames (cccombiner) and
# carried in the H.264 stream (x264enc, ATSC A/53 SEI) of an MP4 or MPEG-TS with AAC audio.
# It runs in real time: the video is held back by the latency and waits for its captions.
# Usage: pipelines/caption-video.sh INPUT OUTPUT.mp4|OUTPUT.ts [PROPERTY=VALUE...]
#   e.g. pipelines/caption-video.sh talk.mp4 talk-cc.ts latency=5000
set -euo pipefail
# shellcheck source=pipelines/lib.sh
. "$(dirname "$0")/lib.sh"
npuwhisper_setup "$@"
npuwhisper_muxer mp4 ts
npuwhisper_require "gstreamer1.0-plugins-ugly/-bad/-libav: run scripts/install-deps.sh" \
  x264enc h264parse cccombiner ccconverter avenc_aac aacparse audiomixer clocksync "$npw_mux"
npuwhisper_require "gst-plugins-rs closedcaption: build it with 'cargo build --release -p npuwhisper-closedcaption' in $npw_root" \
  tttocea608

# How it is live: the transcribed audio goes through an audiomixer that also has a live source,
# one buffer of silence, so the LATENCY query says live and npuwhisper cuts short windows and
# promises its latency, which cccombiner then waits for; clocksync paces the file to the clock.
# Video and the muxer's audio wait for the captions: their queues hold the latency and more.
latency_ms=$(npuwhisper_prop latency 3000)
hold="max-size-time=$(((latency_ms + 2000) * 1000000)) max-size-buffers=0 max-size-bytes=0"
mono16k=audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved
npuwhisper_require_streams audio video
npuwhisper_tmp_output
# shellcheck disable=SC2086 # $hold is several properties
npuwhisper_launch \
  filesrc location="$npw_input_loc" ! decodebin name=input \
  input. ! queue $hold ! videoconvert ! video/x-raw,format=I420 ! cccombiner name=captions \
    ! x264enc tune=zerolatency speed-preset=veryfast ! h264parse ! queue ! mux. \
  input. ! queue $hold ! tee name=audio \
  audio. ! queue ! audioconvert ! audioresample ! $mono16k ! audiomixer name=live \
    ! clocksync ! npuwhisper "${npw_props[@]}" ! tttocea608 mode=roll-up2 \
    ! ccconverter ! closedcaption/x-cea-708,format=cc_data ! queue ! captions.caption \
  audiotestsrc is-live=true wave=silence num-buffers=1 ! $mono16k ! live. \
  audio. ! queue $hold ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. \
  "$npw_mux" name=mux ! filesink location="$npw_tmp_loc"
