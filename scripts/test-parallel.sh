#!/usr/bin/env bash
# The tests of `make test` after lint: pytest, the lab's end-to-end test and the molecule scenarios at the same
# time.
#
# Usage: scripts/test-parallel.sh SCENARIO...     (longest scenario first: they start in this order)
#   PYTEST_WORKERS  pytest's workers (scripts/pytest.sh; default 3)
#   MOLECULE_JOBS   scenarios at once (scripts/molecule-all.sh; default 2 here)
#   PYTEST_MARKERS  pytest's -m expression for the main run (empty: every test); the Makefile gives "not lab"
#   LAB_E2E         1: the lab's end-to-end test (pytest -m lab tests/e2e, one process, the machine's
#                   only lab) runs as a lane of its own from the start, the longest single test; 0: not run
#
# pytest prints as it goes. The lab lane writes to build/test-logs/lab.log, each scenario to
# build/test-logs/<scenario>.log; one line says when each starts and one how it ended, and the logs follow once
# pytest is done. They share nothing: pytest's test hosts, ports and directories are unique per run, each
# scenario has its own containers and ports, the lab its fixed names (gorkheavy-lab-*). Exits non-zero when any
# failed, after all have finished.
set -uo pipefail
cd "$(dirname "$0")/.."
export MOLECULE_JOBS="${MOLECULE_JOBS:-2}"
export MOLECULE_LOG_DIR="${MOLECULE_LOG_DIR:-build/test-logs}"
start=$(date +%s)
mkdir -p "$MOLECULE_LOG_DIR"
rm -f "$MOLECULE_LOG_DIR"/*.log
lab_pid=""
if [ "${LAB_E2E:-0}" = 1 ]; then
  echo "=== the lab end to end (pytest -m lab tests/e2e) started (log: $MOLECULE_LOG_DIR/lab.log)"
  (
    lab_start=$(date +%s)
    scripts/pytest.sh -p no:xdist -m lab --durations=0 -rA tests/e2e >"$MOLECULE_LOG_DIR/lab.log" 2>&1 </dev/null
    rc=$?
    echo "=== the lab end to end: exit $rc after $(($(date +%s) - lab_start))s" | tee -a "$MOLECULE_LOG_DIR/lab.log"
    exit "$rc"
  ) &
  lab_pid=$!
fi
molecule_pid=""
if [ "$#" -gt 0 ]; then
  MOLECULE_SHOW_LOGS=0 scripts/molecule-all.sh "$@" </dev/null &
  molecule_pid=$!
fi
# The slowest tests are listed at the end, to see where the time goes.
markers=()
[ -n "${PYTEST_MARKERS:-}" ] && markers=(-m "$PYTEST_MARKERS")
scripts/pytest.sh --durations=30 "${markers[@]}"
pytest_rc=$?
pytest_s=$(($(date +%s) - start))
molecule_rc=0
if [ -n "$molecule_pid" ]; then
  wait "$molecule_pid"
  molecule_rc=$?
  for s in "$@"; do
    echo "=== molecule test -s $s: output"
    cat "$MOLECULE_LOG_DIR/$s.log" 2>/dev/null || echo "(no log: the scenario did not start)"
  done
fi
lab_rc=0
lab_note="not run (LAB_E2E=0)"
if [ -n "$lab_pid" ]; then
  wait "$lab_pid"
  lab_rc=$?
  lab_note="exit $lab_rc"
  echo "=== the lab end to end: output"
  cat "$MOLECULE_LOG_DIR/lab.log"
fi
echo "=== pytest: exit $pytest_rc after ${pytest_s}s; molecule ($*): exit $molecule_rc; the lab end to end:" \
  "$lab_note; all done after $(($(date +%s) - start))s"
[ "$pytest_rc" -eq 0 ] && [ "$molecule_rc" -eq 0 ] && [ "$lab_rc" -eq 0 ]
