# shellcheck shell=bash
# Shared by pipelines/file-to-*.sh (sourced, not run): transcribe a media file into a
# subtitle file with the npuwhisper element.
#
#   npuwhisper_file_to_subtitles ENCODER INPUT OUTPUT [KEY=VALUE...]
#
# runs  filesrc location=INPUT ! decodebin ! npuwhisper KEY=VALUE... ! ENCODER ! filesink
# writing to a temporary file beside OUTPUT that replaces OUTPUT only when the pipeline
# succeeded. When stderr is a terminal, a progress bar is drawn there (from the progress
# messages of npuwhisper); otherwise nothing is printed but errors. From a checkout, the
# plugin last built there by cargo (release profile) is used when there is one; otherwise the
# installed one (meson install).

# npuwhisper_checkout_plugin_dir ROOT: prints a directory for GST_PLUGIN_PATH holding only the
# plugin cargo built last in the checkout ROOT (release profile), and fails if there is none.
# `cargo build --release` leaves it in target/release/, but `cargo test --release` updates only
# target/release/deps/ (and deps/ also holds proc-macro libraries GStreamer should not scan),
# so the newer of the two is linked from target/gst-plugin/.
npuwhisper_checkout_plugin_dir() {
  local target=${CARGO_TARGET_DIR:-$1/target} f best="" tmp
  target=$(cd "$target" 2>/dev/null && pwd) || return 1
  for f in "$target/release/libgstnpuwhisper.so" "$target/release/deps/libgstnpuwhisper.so"; do
    if [ -f "$f" ] && { [ -z "$best" ] || [ "$f" -nt "$best" ]; }; then best=$f; fi
  done
  [ -n "$best" ] || return 1
  if [ "$(readlink "$target/gst-plugin/libgstnpuwhisper.so")" != "$best" ]; then
    # a new symlink renamed over the old one: concurrent runs never see it missing
    mkdir -p "$target/gst-plugin"
    tmp="$target/gst-plugin/.libgstnpuwhisper.so.$$"
    ln -sfn "$best" "$tmp" && mv -Tf "$tmp" "$target/gst-plugin/libgstnpuwhisper.so" || return 1
  fi
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

npuwhisper_file_to_subtitles() {
  local encoder=$1 prog
  prog=$(basename "$0")
  shift
  if [ $# -lt 2 ]; then
    echo "usage: $prog INPUT OUTPUT [PROPERTY=VALUE...]   e.g. model=base language=auto" >&2
    return 2
  fi
  local input=$1 output=$2 arg
  shift 2
  for arg in "$@"; do
    case $arg in
      [A-Za-z]*=*) ;;
      *) echo "$prog: '$arg' is not a PROPERTY=VALUE for npuwhisper" >&2; return 2 ;;
    esac
  done
  if [ ! -f "$input" ] || [ ! -r "$input" ]; then
    echo "$prog: input file '$input' does not exist or is not readable" >&2
    return 1
  fi

  local root plugin_dir
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if plugin_dir=$(npuwhisper_checkout_plugin_dir "$root"); then
    export GST_PLUGIN_PATH="$plugin_dir${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
  fi
  local tool
  for tool in gst-launch-1.0 gst-inspect-1.0; do
    command -v "$tool" >/dev/null || {
      echo "$prog: $tool not found: run scripts/install-deps.sh" >&2; return 1; }
  done
  if ! gst-inspect-1.0 npuwhisper >/dev/null 2>&1; then
    echo "$prog: GStreamer element 'npuwhisper' not found: build it with 'cargo build --release'" \
         "in $root, or install it with meson (see README.md)" >&2
    return 1
  fi
  if ! gst-inspect-1.0 "$encoder" >/dev/null 2>&1; then
    echo "$prog: GStreamer element '$encoder' not found (gstreamer1.0-plugins-bad): run scripts/install-deps.sh" >&2
    return 1
  fi

  mkdir -p "$(dirname "$output")"
  local tmp
  tmp=$(mktemp "$output.tmp.XXXXXX")
  # -e: on Ctrl-C send EOS so the subtitles so far are written; at the end of the file
  # decodebin's EOS ends the pipeline by itself. On a terminal gst-launch-1.0 is not quiet,
  # so that it prints npuwhisper's progress messages, drawn as a bar on stderr. --no-position:
  # not the position of the subtitles written, which runs ahead of the transcription.
  local launch=(gst-launch-1.0 -e --no-position) rc=0
  [ -t 2 ] || launch+=(-q)
  launch+=(filesrc location="$input" ! decodebin ! npuwhisper "$@" ! "$encoder" ! filesink location="$tmp")
  if [ -t 2 ]; then
    # A whole line first: errors while loading land below it, not after a bar.
    echo "transcribing '$input'" >&2
    ( set -o pipefail; "${launch[@]}" | npuwhisper_progress_bar ) || rc=$?
  else
    "${launch[@]}" || rc=$?
  fi
  if [ "$rc" -eq 0 ]; then
    chmod "$(umask -S | tr -d x)" "$tmp"   # mktemp made it 0600
    mv -f "$tmp" "$output"
  else
    rm -f "$tmp"
    echo "$prog: transcribing '$input' failed (gst-launch-1.0 exit code $rc)" >&2
    return 1
  fi
}
