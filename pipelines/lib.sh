# shellcheck shell=bash
# Shared by the scripts in pipelines/ (sourced, not run).
#
#   npuwhisper_file_to_subtitles ENCODER INPUT OUTPUT [KEY=VALUE...]
#
# runs  filesrc location=INPUT ! decodebin ! npuwhisper KEY=VALUE... ! ENCODER ! filesink
# The other scripts build their own pipeline from the pieces below: npuwhisper_setup (checks
# the arguments, finds the plugins), npuwhisper_require (elements), npuwhisper_launch (runs
# gst-launch-1.0). Output goes to a temporary file beside OUTPUT that replaces OUTPUT only
# when the pipeline succeeded. When stderr is a terminal, a progress bar is drawn there (from
# the progress messages of npuwhisper); otherwise nothing is printed but errors. From a
# checkout, the plugins last built there by cargo (release profile) are used when there are
# some; otherwise the installed ones (meson install).

# Plugins cargo builds in the checkout: npuwhisper itself, and gst-plugins-rs' closed caption
# plugin (tttocea608 ...) built by the workspace crate interop/closedcaption.
NPUWHISPER_PLUGIN_FILES=(libgstnpuwhisper.so libgstnpuwhisper_closedcaption.so)

# npuwhisper_checkout_plugin_dir ROOT: prints a directory for GST_PLUGIN_PATH holding only the
# plugins cargo built last in the checkout ROOT (release profile), and fails if npuwhisper's is
# not there. `cargo build --release` leaves them in target/release/, but `cargo test --release`
# updates only target/release/deps/ (and deps/ also holds proc-macro libraries GStreamer should
# not scan), so the newer of the two is linked from target/gst-plugin/.
npuwhisper_checkout_plugin_dir() {
  local target=${CARGO_TARGET_DIR:-$1/target} name f best tmp
  target=$(cd "$target" 2>/dev/null && pwd) || return 1
  for name in "${NPUWHISPER_PLUGIN_FILES[@]}"; do
    best=""
    for f in "$target/release/$name" "$target/release/deps/$name"; do
      if [ -f "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; }; then best=$f; fi
    done
    if [ -z "$best" ]; then
      [ "$name" = "${NPUWHISPER_PLUGIN_FILES[0]}" ] && return 1
      continue
    fi
    if [ "$(readlink "$target/gst-plugin/$name")" != "$best" ]; then
      # a new symlink renamed over the old one: concurrent runs never see it missing
      mkdir -p "$target/gst-plugin"
      tmp="$target/gst-plugin/.$name.$$"
      ln -sfn "$best" "$tmp" && mv -Tf "$tmp" "$target/gst-plugin/$name" || return 1
    fi
  done
  echo "$target/gst-plugin"
}

# npuwhisper_progress_bar: reads gst-launch-1.0's output and draws the progress messages of
# npuwhisper ("Progress: (transcribe) 57 % (0:01:23 of 0:02:24)") as a bar on stderr; the
# other lines are dropped (errors go to stderr directly). Ignores Ctrl-C so gst-launch-1.0 can
# still write out what it has (-e) without losing its stdout. Always succeeds.
npuwhisper_progress_bar() {
  trap '' INT
  local line rest pct width=30 done_ todo
  draw() { # PERCENT TEXT
    printf -v done_ '%*s' $(($1 * width / 100)) ''
    printf -v todo '%*s' $((width - $1 * width / 100)) ''
    printf '\rtranscribing [%s%s] %s\033[K' "${done_// /#}" "${todo// /.}" "$2" >&2
  }
  local drawn=""
  while IFS= read -r line; do
    case $line in *"(transcribe) "*) ;; *) continue ;; esac
    rest=${line#*"(transcribe) "}
    pct=${rest%% *}
    case $pct in '' | *[!0-9]*) continue ;; esac
    [ "$pct" -le 100 ] || pct=100
    draw "$pct" "$rest"
    drawn=1
  done
  [ -z "$drawn" ] || echo >&2
  return 0
}

# npuwhisper_setup INPUT OUTPUT [PROPERTY=VALUE...]: checks the arguments and sets npw_prog,
# npw_input, npw_output, npw_props (the properties for npuwhisper) and npw_root (the
# checkout); puts the checkout's plugins on GST_PLUGIN_PATH and checks that npuwhisper and
# the GStreamer tools are there.
npuwhisper_setup() {
  npw_prog=$(basename "$0")
  if [ $# -lt 2 ]; then
    echo "usage: $npw_prog INPUT OUTPUT [PROPERTY=VALUE...]   e.g. model=base language=auto" >&2
    return 2
  fi
  npw_input=$1 npw_output=$2
  shift 2
  npw_props=("$@")
  local arg
  for arg in "$@"; do
    case $arg in
      [A-Za-z]*=*) ;;
      *) echo "$npw_prog: '$arg' is not a PROPERTY=VALUE for npuwhisper" >&2; return 2 ;;
    esac
  done
  if [ ! -f "$npw_input" ] || [ ! -r "$npw_input" ]; then
    echo "$npw_prog: input file '$npw_input' does not exist or is not readable" >&2
    return 1
  fi

  local plugin_dir
  npw_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if plugin_dir=$(npuwhisper_checkout_plugin_dir "$npw_root"); then
    export GST_PLUGIN_PATH="$plugin_dir${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
  fi
  local tool
  for tool in gst-launch-1.0 gst-inspect-1.0; do
    command -v "$tool" >/dev/null || {
      echo "$npw_prog: $tool not found: run scripts/install-deps.sh" >&2; return 1; }
  done
  if ! gst-inspect-1.0 npuwhisper >/dev/null 2>&1; then
    echo "$npw_prog: GStreamer element 'npuwhisper' not found: build it with 'cargo build --release'" \
         "in $npw_root, or install it with meson (see README.md)" >&2
    return 1
  fi
}

# npuwhisper_require HINT ELEMENT...: fails, saying HINT (where the elements come from), when
# one of the elements is missing.
npuwhisper_require() {
  local hint=$1 e
  shift
  for e in "$@"; do
    if ! gst-inspect-1.0 "$e" >/dev/null 2>&1; then
      echo "$npw_prog: GStreamer element '$e' not found ($hint)" >&2
      return 1
    fi
  done
}

# npuwhisper_require_streams KIND...: fails when the input has no stream of one of the KINDs
# (audio, video), which would leave a pipeline waiting for it forever. Asks gst-discoverer-1.0
# (gstreamer1.0-plugins-base-apps); without it, does not check.
npuwhisper_require_streams() {
  command -v gst-discoverer-1.0 >/dev/null || return 0
  local found kind
  found=$(gst-discoverer-1.0 "$npw_input" 2>/dev/null) || return 0
  for kind in "$@"; do
    if ! grep -Eq "^ *$kind #[0-9]+:" <<<"$found"; then
      echo "$npw_prog: '$npw_input' has no $kind stream" >&2
      return 1
    fi
  done
}

# npuwhisper_tmp_output: makes the temporary file (npw_tmp) the pipeline writes instead of
# npw_output.
npuwhisper_tmp_output() {
  mkdir -p "$(dirname "$npw_output")"
  npw_tmp=$(mktemp "$npw_output.tmp.XXXXXX")
}

# npuwhisper_run PIPELINE...: runs gst-launch-1.0 with the pipeline description, with the
# progress bar on a terminal; returns gst-launch-1.0's exit code.
npuwhisper_run() {
  # -e: on Ctrl-C send EOS so what is written so far is a valid file; at the end of the file
  # decodebin's EOS ends the pipeline by itself. On a terminal gst-launch-1.0 is not quiet,
  # so that it prints npuwhisper's progress messages, drawn as a bar on stderr. --no-position:
  # not the position of the output, which runs ahead of the transcription.
  local launch=(gst-launch-1.0 -e --no-position) rc=0
  [ -t 2 ] || launch+=(-q)
  launch+=("$@")
  if [ -t 2 ]; then
    # A whole line first: errors while loading land below it, not after a bar.
    echo "${npw_doing:-transcribing} '$npw_input'" >&2
    ( set -o pipefail; "${launch[@]}" | npuwhisper_progress_bar ) || rc=$?
  else
    "${launch[@]}" || rc=$?
  fi
  return "$rc"
}

# npuwhisper_launch PIPELINE...: npuwhisper_run (the pipeline writes npw_tmp), then moves
# npw_tmp to npw_output, or removes it on failure.
npuwhisper_launch() {
  local rc=0
  npuwhisper_run "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    chmod "$(umask -S | tr -d x)" "$npw_tmp"   # mktemp made it 0600
    mv -f "$npw_tmp" "$npw_output"
  else
    rm -f "$npw_tmp"
    echo "$npw_prog: transcribing '$npw_input' failed (gst-launch-1.0 exit code $rc)" >&2
    return 1
  fi
}

# npuwhisper_prop NAME DEFAULT: the value npw_props gives the npuwhisper property NAME, else
# DEFAULT.
npuwhisper_prop() {
  local arg value=$2
  for arg in "${npw_props[@]}"; do
    case $arg in "$1="*) value=${arg#*=} ;; esac
  done
  echo "$value"
}

# npuwhisper_muxer EXTENSION...: sets npw_mux to the muxer for npw_output's extension, one of
# EXTENSION... (mp4, ts, mkv); fails for another.
npuwhisper_muxer() {
  local ext=${npw_output##*.} allowed
  ext=${ext,,}
  for allowed in "$@"; do
    [ "$ext" = "$allowed" ] || continue
    case $ext in
      mp4) npw_mux=mp4mux ;;
      ts) npw_mux=mpegtsmux ;;
      mkv) npw_mux=matroskamux ;;
    esac
    return 0
  done
  local want
  want=$(printf ' or .%s' "$@")
  echo "$npw_prog: the output's name must end in ${want# or } (the container)" >&2
  return 2
}

npuwhisper_file_to_subtitles() {
  local encoder=$1
  shift
  npuwhisper_setup "$@" || return
  npuwhisper_require "gstreamer1.0-plugins-bad: run scripts/install-deps.sh" "$encoder" || return
  npuwhisper_tmp_output
  npuwhisper_launch filesrc location="$npw_input" ! decodebin ! npuwhisper "${npw_props[@]}" \
    ! "$encoder" ! filesink location="$npw_tmp"
}
