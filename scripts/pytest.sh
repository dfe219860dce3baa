#!/usr/bin/env bash
# Run pytest; "no tests collected" (exit 5) is not a failure of the suite.
set -uo pipefail
pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest: no tests collected for: $*"
  exit 0
fi
exit "$rc"
