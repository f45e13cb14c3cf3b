# Sourced by the setup scripts: one progress line per stage, the tools' own output into a log.
#   stage "what happens now"      prints "<prefix>: what happens now"
#   quietly CMD ARGS...           runs CMD with its output appended to $LOG; while it runs,
#                                 prints the elapsed time every $AUTODECO_PROGRESS_EVERY seconds
#                                 (default 30; on a terminal the line is rewritten in place,
#                                 elsewhere one line each time) and, for a stage that took that
#                                 long, "done in ..."; on failure prints the log's name and its
#                                 last lines, then exits 1
# Set AUTODECO_VERBOSE=1 to see every tool's output instead.
: "${LOG:?set LOG before sourcing scripts/_quiet.sh}"
: "${PREFIX:=setup}"
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

stage() { echo "$PREFIX: $*"; }

_elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

quietly() {
  if [ "${AUTODECO_VERBOSE:-0}" = "1" ]; then
    "$@"
    return
  fi
  echo "\$ $*" >>"$LOG"
  local every=${AUTODECO_PROGRESS_EVERY:-30} start=$SECONDS tty=0 pid status
  [ -t 1 ] && tty=1
  "$@" >>"$LOG" 2>&1 &
  pid=$!
  # a background job of a script ignores Ctrl-C: pass INT / TERM on to it
  trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
  local next=$((start + every))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    if [ "$SECONDS" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      if [ "$tty" = 1 ]; then
        printf '\r%s:   ... still running, %s elapsed (log: %s)' "$PREFIX" "$(_elapsed $((SECONDS - start)))" "$LOG"
      else
        echo "$PREFIX:   ... still running, $(_elapsed $((SECONDS - start))) elapsed (log: $LOG)"
      fi
      next=$((next + every))
    fi
  done
  status=0
  wait "$pid" || status=$?
  trap - INT TERM
  if [ $((SECONDS - start)) -ge "$every" ]; then
    [ "$tty" = 1 ] && printf '\n'
    [ "$status" -eq 0 ] && echo "$PREFIX:   done in $(_elapsed $((SECONDS - start)))"
  fi
  if [ "$status" -ne 0 ]; then
    echo "$PREFIX: FAILED: $*" >&2
    echo "$PREFIX: the full output is in $LOG; its last lines:" >&2
    tail -n 25 "$LOG" | sed 's/^/    /' >&2
    exit 1
  fi
}
