#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only when something is missing.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in podman runc debootstrap postgresql redis-server openssh-client sshpass iproute2 uidmap chromium chromium-driver fonts-dejavu-core; do
  have "$pkg" || need+=("$pkg")
done
if [ "${#need[@]}" -eq 0 ]; then
  echo "system-deps: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
