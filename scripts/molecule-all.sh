#!/usr/bin/env bash
# Run `molecule test` for every scenario under molecule/ (or the ones named as arguments).
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
for s in "${scenarios[@]}"; do
  echo "=== molecule test -s $s"
  start=$(date +%s)
  molecule test -s "$s"
  echo "=== molecule scenario $s passed in $(( $(date +%s) - start ))s"
done
