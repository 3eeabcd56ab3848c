# shellcheck shell=bash
# Shared by the scripts in pipelines/ (sourced, not run).
#
#   npuwhisper_file_to_subtitles FORMAT INPUT OUTPUT [KEY=VALUE...]
#
# runs the npuwhisper command (cli/), which writes OUTPUT in FORMAT (srt, vtt, txt, json).
# The other scripts build their own pipeline from the pieces below: npuwhisper_setup (checks
# the arguments, finds the plugins), npuwhisper_require (elements), npuwhisper_launch (runs
# gst-launch-1.0). Output goes to a temporary file beside OUTPUT that replaces OUTPUT only
# when the pipeline succeeded. Before any work, an OUTPUT that is the INPUT (any spelling), a
# directory, or in a place that cannot be written is refused. Ctrl-C and SIGTERM stop
# gst-launch-1.0, remove the temporary files, keep OUTPUT as it was and exit 130 and 143.
# When stderr is a terminal, a progress bar is drawn there (from the progress messages of
# npuwhisper); otherwise nothing is printed but errors. From a checkout, the plugins last built
# there by cargo (release profile) are used when there are some; otherwise the installed ones
# (meson install).

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
# other lines are dropped (errors go to stderr directly). Always succeeds.
npuwhisper_progress_bar() {
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
  if [ -d "$npw_output" ]; then
    echo "$npw_prog: output '$npw_output' is a directory" >&2
    return 1
  fi
  if [ "$npw_input" -ef "$npw_output" ]; then
    echo "$npw_prog: output '$npw_output' is the input '$npw_input': refusing to overwrite it" >&2
    return 1
  fi
  # gst-launch-1.0 reads a backslash in a property value as an escape.
  npw_input_loc=$(npuwhisper_gst_escape "$npw_input")

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

# npuwhisper_gst_escape PATH: PATH as a gst-launch-1.0 property value (backslashes doubled).
npuwhisper_gst_escape() {
  printf '%s' "${1//\\/\\\\}"
}

# Temporary files of this run, removed on exit, and the running gst-launch-1.0.
npw_temps=()
npw_child=""
npuwhisper_cleanup() {
  [ ${#npw_temps[@]} -eq 0 ] || rm -f "${npw_temps[@]}"
}
# npuwhisper_on_signal CODE: stops gst-launch-1.0 without letting it finish the file, removes
# the temporary files and exits CODE.
npuwhisper_on_signal() {
  trap '' INT TERM
  if [ -n "$npw_child" ]; then
    kill -TERM "$npw_child" 2>/dev/null || true
    wait "$npw_child" 2>/dev/null || true
  fi
  npuwhisper_cleanup
  echo "$npw_prog: stopped; '$npw_output' left as it was" >&2
  exit "$1"
}
trap npuwhisper_cleanup EXIT
trap 'npuwhisper_on_signal 130' INT
trap 'npuwhisper_on_signal 143' TERM

# npuwhisper_tmpfile SUFFIX: prints a new temporary file in npw_output's directory, removed on
# exit; fails with a message when the directory cannot be written. Call it as
# `npuwhisper_tmpfile SUFFIX; var=$npw_made` (not in $(...), which would lose the record).
npuwhisper_tmpfile() {
  local dir name
  dir=$(dirname "$npw_output") name=$(basename "$npw_output")
  if ! mkdir -p "$dir" 2>/dev/null || ! npw_made=$(mktemp "$dir/.$name.XXXXXX$1" 2>/dev/null); then
    echo "$npw_prog: cannot write in '$dir'" >&2
    return 1
  fi
  npw_temps+=("$npw_made")
}

# npuwhisper_tmp_output: makes the temporary file (npw_tmp, npw_tmp_loc for gst-launch-1.0)
# the pipeline writes instead of npw_output.
npuwhisper_tmp_output() {
  npuwhisper_tmpfile .part || return
  npw_tmp=$npw_made
  npw_tmp_loc=$(npuwhisper_gst_escape "$npw_tmp")
}

# npuwhisper_run PIPELINE...: runs gst-launch-1.0 with the pipeline description, with the
# progress bar on a terminal; returns gst-launch-1.0's exit code.
npuwhisper_run() {
  # No -e: a stopped run is discarded, not finished. On a terminal gst-launch-1.0 is not
  # quiet, so that it prints npuwhisper's progress messages, drawn as a bar on stderr.
  # --no-position: not the position of the output, which runs ahead of the transcription.
  local launch=(gst-launch-1.0 --no-position) rc=0
  [ -t 2 ] || launch+=(-q)
  launch+=("$@")
  # In the background, so that a signal runs the trap at once (bash waits for a foreground
  # child first), which stops it: no gst-launch-1.0 outlives the script.
  if [ -t 2 ]; then
    # A whole line first: errors while loading land below it, not after a bar.
    echo "${npw_doing:-transcribing} '$npw_input'" >&2
    "${launch[@]}" > >(npuwhisper_progress_bar) &
  else
    "${launch[@]}" &
  fi
  npw_child=$!
  wait "$npw_child" || rc=$?
  npw_child=""
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

# npuwhisper_file_to_subtitles FORMAT INPUT OUTPUT [PROPERTY=VALUE...]: runs the npuwhisper
# command (the checkout's build, else the installed one), which has the same guarantees.
npuwhisper_file_to_subtitles() {
  local format=$1 root cli arg
  shift
  npw_prog=$(basename "$0")
  if [ $# -lt 2 ]; then
    echo "usage: $npw_prog INPUT OUTPUT [PROPERTY=VALUE...]   e.g. model=base language=auto" >&2
    return 2
  fi
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cli=${CARGO_TARGET_DIR:-$root/target}/release/npuwhisper
  [ -x "$cli" ] || cli=$(command -v npuwhisper) || {
    echo "$npw_prog: the npuwhisper command is not built: run 'cargo build --release' in $root" >&2
    return 1
  }
  local args=(--quiet --format "$format" --output-file "$2")
  [ -t 2 ] && args=("${args[@]:1}")
  for arg in "${@:3}"; do
    case $arg in
      [A-Za-z]*=*) args+=(--set "$arg") ;;
      *) echo "$npw_prog: '$arg' is not a PROPERTY=VALUE for npuwhisper" >&2; return 2 ;;
    esac
  done
  exec "$cli" "${args[@]}" -- "$1"
}
