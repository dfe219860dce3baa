#!/usr/bin/env bash
# Start one systemd test host from localhost/gorkheavy-testhost:bookworm and print its address on podman's
# bridge network. With a public key file, root may log in over SSH with that key (like a fresh cloud VM).
#
# Usage: tests/hosts/run-test-host.sh NAME [PUBLIC_KEY_FILE]
#   IMAGE=...  another image (default localhost/gorkheavy-testhost:bookworm)
#   TESTHOST_IP_FORWARD=0|1  IPv4 forwarding in the host's network namespace (default 0, as on a fresh VM)
#   TESTHOST_NETWORK=NAME    a podman network of the caller's instead of podman's default one
#   TESTHOST_BOOT_TIMEOUT=S  how long to wait for systemd to finish booting (default 180)
# Remove the host with: podman rm -f NAME
#
# The container is deliberately NOT --privileged: a privileged container can set the machine's clock, load
# kernel modules and switch off the machine's swap. It gets only the namespaced network capabilities that
# ufw/iptables need; /proc/sys is read-only inside it.
set -euo pipefail
name="${1:?usage: $0 NAME [PUBLIC_KEY_FILE]}"
pubkey="${2:-}"
image="${IMAGE:-localhost/gorkheavy-testhost:bookworm}"
# Forwarding is set explicitly: a new network namespace otherwise copies the machine's own value at that moment (0 on
# a freshly booted machine until podman's first bridge network turns it on, 1 after), and the host cannot change it
# itself (/proc/sys is read-only inside), so ufw's "routed" status would depend on what ran before.
ip_forward="${TESTHOST_IP_FORWARD:-0}"
case "$ip_forward" in 0 | 1) ;; *) echo "run-test-host: TESTHOST_IP_FORWARD must be 0 or 1, got $ip_forward" >&2; exit 2 ;; esac
podman image exists "$image" || { echo "run-test-host: $image is missing; run scripts/build-test-image.sh" >&2; exit 1; }
network_args=()
if [ -n "${TESTHOST_NETWORK:-}" ]; then network_args=(--network "$TESTHOST_NETWORK"); fi
podman --runtime runc run -d --name "$name" --hostname "$name" "${network_args[@]}" \
  --systemd=always --cap-add NET_ADMIN,NET_RAW,AUDIT_WRITE \
  --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --sysctl net.ipv4.ip_forward="$ip_forward" \
  --label gorkheavy.testhost=1 "$image" /sbin/init >/dev/null
# Boot takes a few seconds; on a machine busy with other tests (or test hosts booting at the same time) it can
# take much longer, so the wait is for the state itself, up to a generous deadline.
boot_timeout="${TESTHOST_BOOT_TIMEOUT:-180}"
deadline=$((SECONDS + boot_timeout))
state=""
# One `systemctl is-system-running --wait` inside waits for the end of the boot itself; it is asked again only
# while systemd does not answer yet (the first moments) or says something else, half a second apart.
while [ "$SECONDS" -lt "$deadline" ]; do
  state="$(timeout "$((deadline - SECONDS + 1))" podman exec "$name" systemctl is-system-running --wait 2>/dev/null || true)"
  case "$state" in running | degraded) break ;; esac
  sleep 0.5
done
case "$state" in
  running | degraded) ;;
  *) echo "run-test-host: $name did not boot in ${boot_timeout}s (systemctl is-system-running: ${state:-no answer})" >&2; exit 1 ;;
esac
# A user's systemd manager (user@UID.service) cannot stop in a container without CAP_SYS_ADMIN: it hangs until
# systemd gives up after 90 s, and that user's next log-in waits for it. Keep the managers running instead, as if
# every user lingered.
podman exec "$name" sh -c 'mkdir -p /etc/systemd/logind.conf.d &&
  printf "[Login]\nUserStopDelaySec=infinity\n" >/etc/systemd/logind.conf.d/90-testhost.conf &&
  systemctl restart systemd-logind'
if [ -n "$pubkey" ]; then
  podman exec -i "$name" sh -c 'install -d -m 0700 /root/.ssh && cat >/root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys' <"$pubkey"
fi
if [ -n "${TESTHOST_NETWORK:-}" ]; then
  podman inspect -f "{{(index .NetworkSettings.Networks \"$TESTHOST_NETWORK\").IPAddress}}" "$name"
else
  podman inspect -f '{{.NetworkSettings.IPAddress}}' "$name"
fi
