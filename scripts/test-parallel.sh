#!/usr/bin/env bash
# The tests of `make test` after lint: pytest and the molecule scenarios at the same time.
#
# Usage: scripts/test-parallel.sh SCENARIO...     (longest scenario first: they start in this order)
#   PYTEST_WORKERS  pytest's workers (scripts/pytest.sh; default 3)
#   MOLECULE_JOBS   scenarios at once (scripts/molecule-all.sh; default 2 here)
#   PYTEST_MARKERS  pytest's -m expression (empty: every test)
#
# pytest prints as it goes. Each scenario writes to build/test-logs/<scenario>.log; one line says when it starts
# and one how it ended, and the logs follow once pytest is done. The two share nothing: pytest's test hosts,
# ports and directories are unique per run, each scenario has its own containers and ports. Exits non-zero when
# either failed, after both have finished.
set -uo pipefail
cd "$(dirname "$0")/.."
export MOLECULE_JOBS="${MOLECULE_JOBS:-2}"
export MOLECULE_LOG_DIR="${MOLECULE_LOG_DIR:-build/test-logs}"
start=$(date +%s)
molecule_pid=""
if [ "$#" -gt 0 ]; then
  mkdir -p "$MOLECULE_LOG_DIR"
  rm -f "$MOLECULE_LOG_DIR"/*.log
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
echo "=== pytest: exit $pytest_rc after ${pytest_s}s; molecule ($*): exit $molecule_rc; all done after $(($(date +%s) - start))s"
[ "$pytest_rc" -eq 0 ] && [ "$molecule_rc" -eq 0 ]
