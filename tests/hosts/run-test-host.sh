#!/usr/bin/env bash
# Start one systemd test host from localhost/gorkheavy-testhost:bookworm and print its address on podman's
# bridge network. With a public key file, root may log in over SSH with that key (like a fresh cloud VM).
#
# Usage: tests/hosts/run-test-host.sh NAME [PUBLIC_KEY_FILE]
#   IMAGE=...  another image (default localhost/gorkheavy-testhost:bookworm)
# Remove the host with: podman rm -f NAME
#
# The container is deliberately NOT --privileged: a privileged container can set the machine's clock, load
# kernel modules and switch off the machine's swap. It gets only the namespaced network capabilities that
# ufw/iptables need; /proc/sys is read-only inside it.
set -euo pipefail
name="${1:?usage: $0 NAME [PUBLIC_KEY_FILE]}"
pubkey="${2:-}"
image="${IMAGE:-localhost/gorkheavy-testhost:bookworm}"
podman image exists "$image" || { echo "run-test-host: $image is missing; run scripts/build-test-image.sh" >&2; exit 1; }
podman --runtime runc run -d --name "$name" --hostname "$name" \
  --systemd=always --cap-add NET_ADMIN,NET_RAW,AUDIT_WRITE \
  --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
  --label gorkheavy.testhost=1 "$image" /sbin/init >/dev/null
for _ in $(seq 1 60); do
  state="$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)"
  case "$state" in running | degraded) break ;; esac
  sleep 0.5
done
case "$state" in
  running | degraded) ;;
  *) echo "run-test-host: $name did not boot (systemctl is-system-running: ${state:-no answer})" >&2; exit 1 ;;
esac
if [ -n "$pubkey" ]; then
  podman exec -i "$name" sh -c 'install -d -m 0700 /root/.ssh && cat >/root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys' <"$pubkey"
fi
podman inspect -f '{{.NetworkSettings.IPAddress}}' "$name"
