#!/usr/bin/env bash
# Run site.yml against an inventory, after checking what the controller needs.
set -euo pipefail
cd "$(dirname "$0")/.."
inventory="${1:-inventory/example}"
shift || true
if [ ! -d "$inventory" ] && [ ! -f "$inventory" ]; then
  echo "site: no inventory at '$inventory'. Copy the example: cp -r inventory/example inventory/mylab, edit it," >&2
  echo "      then run: make site INVENTORY=inventory/mylab" >&2
  exit 2
fi
echo "site: stages in this collection:"
missing=()
for stage in provision prepare cluster ensemble; do
  if [ -f "playbooks/$stage.yml" ]; then
    echo "  - $stage: playbooks/$stage.yml"
  else
    echo "  - $stage: NOT YET PART OF THIS COLLECTION (site.yml stops before it)"
    missing+=("$stage")
  fi
done
if [ "$inventory" = "inventory/example" ]; then
  echo "site: running against the example inventory; its hosts, addresses and keys are placeholders." >&2
  echo "      Copy it (cp -r inventory/example inventory/mylab), edit it, and run: make site INVENTORY=inventory/mylab" >&2
fi
report_missing() {
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "site: stages not yet part of this collection, so not run: ${missing[*]}." >&2
  fi
}
trap report_missing EXIT
ansible-playbook -i "$inventory" site.yml "$@"
