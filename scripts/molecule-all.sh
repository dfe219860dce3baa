#!/usr/bin/env bash
# Run `molecule test` for every scenario under molecule/ (or the ones named as arguments).
#
# MOLECULE_JOBS=N   run up to N scenarios at the same time (default 1: one after the other, output as it comes).
#                   With N > 1, or with MOLECULE_LOG_DIR set, each scenario writes to MOLECULE_LOG_DIR/<scenario>.log
#                   (default build/test-logs),
#                   a line says when one starts and how it ended, and every log is printed once all are done
#                   (MOLECULE_SHOW_LOGS=0: not printed; scripts/test-parallel.sh prints them after pytest).
#                   The scenarios share nothing: each has its own containers (named after the scenario), its own
#                   stand-in port and molecule's own directory per scenario.
# The scenarios start in the order given, so name the longest first.
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios=("$@")
if [ "${#scenarios[@]}" -eq 0 ]; then
  for f in molecule/*/molecule.yml; do
    [ -e "$f" ] || continue
    scenarios+=("$(basename "$(dirname "$f")")")
  done
fi
if [ "${#scenarios[@]}" -eq 0 ]; then
  echo "molecule: no scenarios under molecule/"
  exit 0
fi
jobs_max="${MOLECULE_JOBS:-1}"
case "$jobs_max" in '' | *[!0-9]* | 0) echo "molecule-all: MOLECULE_JOBS must be 1 or more, got '$jobs_max'" >&2; exit 2 ;; esac

if [ "$jobs_max" -eq 1 ] && [ -z "${MOLECULE_LOG_DIR:-}" ]; then
  for s in "${scenarios[@]}"; do
    echo "=== molecule test -s $s"
    start=$(date +%s)
    molecule test -s "$s"
    echo "=== molecule scenario $s passed in $(($(date +%s) - start))s"
  done
  exit 0
fi

logs="${MOLECULE_LOG_DIR:-build/test-logs}"
mkdir -p "$logs"
run_one() {
  local s="$1" start rc
  start=$(date +%s)
  echo "=== molecule test -s $s started (log: $logs/$s.log)"
  set +e
  molecule test -s "$s" >"$logs/$s.log" 2>&1 </dev/null
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    echo "=== molecule scenario $s passed in $(($(date +%s) - start))s" | tee -a "$logs/$s.log"
  else
    echo "=== molecule scenario $s FAILED (exit $rc) after $(($(date +%s) - start))s" | tee -a "$logs/$s.log"
  fi
  return "$rc"
}
declare -A pid_of=()
failed=()
wait_one() {
  # Wait for any running scenario and note a failure.
  local done_pid s
  set +e
  wait -n -p done_pid "${pid_of[@]}"
  local rc=$?
  set -e
  for s in "${!pid_of[@]}"; do
    if [ "${pid_of[$s]}" = "$done_pid" ]; then
      unset "pid_of[$s]"
      [ "$rc" -eq 0 ] || failed+=("$s")
    fi
  done
}
for s in "${scenarios[@]}"; do
  while [ "${#pid_of[@]}" -ge "$jobs_max" ]; do wait_one; done
  run_one "$s" &
  pid_of[$s]=$!
done
while [ "${#pid_of[@]}" -gt 0 ]; do wait_one; done
if [ "${MOLECULE_SHOW_LOGS:-1}" = 1 ]; then
  for s in "${scenarios[@]}"; do
    echo "=== molecule test -s $s: output"
    cat "$logs/$s.log"
  done
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "=== molecule: failed: ${failed[*]}"
  exit 1
fi
echo "=== molecule: ${scenarios[*]} passed"
