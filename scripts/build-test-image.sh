#!/usr/bin/env bash
# Build the systemd test host image localhost/gorkheavy-testhost:bookworm from a debootstrap root filesystem.
#
# The image is a Debian 12 host as a cloud VM would be handed over: systemd as PID 1, sshd, python3, sudo,
# plus everything the prepare roles install (ufw, systemd-timesyncd, kmod, procps, iptables, python3-apt), so
# that converging a test host never needs a package archive, plus the Debian Python packages the K3s stand-in's
# zipapp runs on (python3-aiohttp, -yaml, -cryptography, -jsonschema; see app/gorkheavy_lab/k3s/README.md), and
# python3-venv: in the lab, a pod of the stock Python image runs on the node's Python 3.11, whose venv needs it.
# chrony conflicts with systemd-timesyncd, so it is not installed: its packages are downloaded into the image's
# apt cache and install offline when a test asks for it.
#
# The image carries the label gorkheavy.recipe=<sha256 of this script>; when an image with the same label exists
# the build is skipped (FORCE=1 rebuilds). Needs root, debootstrap, podman and the Debian archive.
#
# Usage: scripts/build-test-image.sh [IMAGE]        (default localhost/gorkheavy-testhost:bookworm)
set -euo pipefail

IMAGE="${1:-localhost/gorkheavy-testhost:bookworm}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(
  systemd systemd-sysv dbus libpam-systemd
  openssh-server openssh-client sudo passwd
  python3 python3-apt
  iproute2 iputils-ping procps kmod iptables ufw systemd-timesyncd
  ca-certificates tzdata less
)
# Installed with apt after debootstrap: debootstrap's own dependency ordering fails to configure them.
STANDIN_PACKAGES=(python3-aiohttp python3-yaml python3-cryptography python3-jsonschema python3-venv)
CACHED_PACKAGES=(chrony)

die() { echo "build-test-image: $*" >&2; exit 1; }

recipe_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and podman import need it); try: sudo $0"
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || die "$tool is missing; run scripts/system-deps.sh"
done

if [ "${FORCE:-0}" != 1 ] &&
  [ "$(podman image inspect --format '{{ index .Labels "gorkheavy.recipe" }}' "$IMAGE" 2>/dev/null || true)" = "$recipe_hash" ]; then
  echo "build-test-image: $IMAGE is up to date (recipe $recipe_hash)"
  exit 0
fi

work="$(mktemp -d /var/tmp/gorkheavy-testhost.XXXXXX)"
rootfs="$work/rootfs"
cleanup() {
  # Anything still mounted inside the chroot must go before the tree is removed.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$rootfs/$m" 2>/dev/null && umount -l "$rootfs/$m"
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$SECONDS
echo "build-test-image: debootstrap $SUITE into $rootfs"
include="$(IFS=,; echo "${PACKAGES[*]}")"
debootstrap --variant=minbase --include="$include" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  die "debootstrap failed (full log above); is $MIRROR reachable?"
}

echo "build-test-image: caching ${CACHED_PACKAGES[*]} for offline installs"
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://security.debian.org/debian-security $SUITE-security main
EOF
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
apt_in() { chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o Dpkg::Options::=--force-confold "$@"; }
apt_in update >>"$work/apt.log" 2>&1 || die "apt-get update failed: $(tail -n 5 "$work/apt.log")"
# Bring the installed packages to the current point release so the cached ones resolve against them.
apt_in dist-upgrade >>"$work/apt.log" 2>&1 || die "apt-get dist-upgrade failed: $(tail -n 5 "$work/apt.log")"
apt_in install --no-install-recommends "${STANDIN_PACKAGES[@]}" >>"$work/apt.log" 2>&1 ||
  die "installing ${STANDIN_PACKAGES[*]} failed: $(tail -n 5 "$work/apt.log")"
apt_in clean
apt_in --download-only install "${CACHED_PACKAGES[@]}" >>"$work/apt.log" 2>&1 ||
  die "caching ${CACHED_PACKAGES[*]} failed: $(tail -n 5 "$work/apt.log")"
ls "$rootfs"/var/cache/apt/archives/chrony_*.deb >/dev/null || die "chrony was not cached"

echo "build-test-image: configuring the root filesystem"
# Each container gets its own machine id and its own SSH host keys at first boot.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs"/etc/ssh/ssh_host_*
cat >"$rootfs/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service ssh.socket
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
chroot "$rootfs" systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1
# Units that make no sense in a container and only slow the boot down.
for unit in getty@tty1.service console-getty.service systemd-remount-fs.service apt-daily.timer apt-daily-upgrade.timer; do
  chroot "$rootfs" systemctl mask "$unit" >/dev/null 2>&1
done
# A test host never holds CAP_SYS_TIME (see tests/hosts/README.md), and systemd skips time daemons inside
# containers. Let them start anyway so their configuration and unit state can be tested; they cannot set the
# clock without the capability, and the containers reach no NTP server.
for unit in systemd-timesyncd chrony; do
  mkdir -p "$rootfs/etc/systemd/system/$unit.service.d"
  printf '%s\n' '# Test host only: an empty condition resets all conditions of the unit.' '[Unit]' 'ConditionVirtualization=' \
    >"$rootfs/etc/systemd/system/$unit.service.d/10-testhost.conf"
done
echo "gorkheavy-testhost" >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"
# Keep downloaded packages: the cache is what makes offline installs work.
rm -f "$rootfs/etc/apt/apt.conf.d/docker-clean"
echo 'APT::Keep-Downloaded-Packages "true";' >"$rootfs/etc/apt/apt.conf.d/01keep-debs"

echo "build-test-image: importing as $IMAGE"
previous="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
tar -C "$rootfs" --numeric-owner -c . | podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL gorkheavy.recipe=$recipe_hash" \
  --quiet - "$IMAGE" >/dev/null
# The image this one replaces is no longer tagged; remove it unless a container still uses it.
if [ -n "$previous" ] && [ "$(podman image inspect --format '{{.Id}}' "$IMAGE")" != "$previous" ]; then
  podman image rm "$previous" >/dev/null 2>&1 || true
fi
echo "build-test-image: built $IMAGE (recipe $recipe_hash) in $((SECONDS - started))s"
