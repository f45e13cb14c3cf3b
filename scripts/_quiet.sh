# Sourced by the setup scripts: one progress line per stage, the tools' own output into a log.
#   stage "what happens now"      prints "<prefix>: what happens now"
#   quietly CMD ARGS...           runs CMD with its output appended to $LOG; on failure prints
#                                 the log's name and its last lines, then exits 1
# Set AUTODECO_VERBOSE=1 to see every tool's output instead.
: "${LOG:?set LOG before sourcing scripts/_quiet.sh}"
: "${PREFIX:=setup}"
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

stage() { echo "$PREFIX: $*"; }

quietly() {
  if [ "${AUTODECO_VERBOSE:-0}" = "1" ]; then
    "$@"
    return
  fi
  echo "\$ $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "$PREFIX: FAILED: $*" >&2
    echo "$PREFIX: the full output is in $LOG; its last lines:" >&2
    tail -n 25 "$LOG" | sed 's/^/    /' >&2
    exit 1
  fi
}
