"""What a person checks on a node after the prepare stage with every default.

Swap, firewall, time and the K3s prerequisites. These hosts are containers that share the kernel with the
machine running the tests, so swap, loaded modules and sysctls are checked where they persist (fstab, masked
units, files under /etc). Not even net.ipv4.ip_forward, which the kernel keeps per network namespace, can be
set live: /proc/sys is read-only in a test host, which starts with forwarding off like a fresh VM
(tests/hosts/run-test-host.sh).
"""

from __future__ import annotations

import re

FSTAB_PREFIX = "#gorkheavy-swap-off# "
ZRAM_UNITS = ("zramswap.service", "systemd-zram-setup@zram0.service", "dev-zram0.swap")
DEFAULT_SERVERS = "0.pool.ntp.org 1.pool.ntp.org 2.pool.ntp.org 3.pool.ntp.org"
K3S_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
# A swap entry: device, mount point, type "swap" (the line prepare.yml added is "/swap.img none swap sw 0 0").
ACTIVE_SWAP_LINE = re.compile(r"^\s*[^#\s]\S*\s+\S+\s+swap(\s|$)")


def test_fstab_swap_line_is_commented_out_not_deleted(host):
    lines = host.file("/etc/fstab").content_string.splitlines()
    assert FSTAB_PREFIX + "/swap.img none swap sw 0 0" in lines
    assert [line for line in lines if ACTIVE_SWAP_LINE.match(line)] == []


def test_swap_target_and_zram_units_are_masked(host):
    for unit in ("swap.target", *ZRAM_UNITS):
        state = host.run("systemctl is-enabled %s", unit).stdout.strip()
        assert state == "masked", f"{unit} is {state!r}"


def test_ufw_is_installed_but_inactive(host):
    assert host.package("ufw").is_installed
    with host.sudo():
        status = host.check_output("ufw status")
    assert status.splitlines()[0] == "Status: inactive"


def test_timesyncd_is_the_time_service_and_runs_with_the_configured_servers(host):
    timesyncd = host.service("systemd-timesyncd")
    assert timesyncd.is_enabled
    assert timesyncd.is_running
    dropin = host.file("/etc/systemd/timesyncd.conf.d/50-gorkheavy.conf")
    assert dropin.is_file
    assert f"NTP={DEFAULT_SERVERS}" in dropin.content_string.splitlines()
    # timesyncd reads its drop-ins: the servers it was started with are the configured ones.
    shown = host.run("timedatectl show-timesync --property=SystemNTPServers --value")
    assert shown.rc == 0, shown.stderr
    assert shown.stdout.split() == DEFAULT_SERVERS.split()
    assert not host.package("chrony").is_installed


def test_k3s_modules_are_listed_for_boot(host):
    conf = host.file("/etc/modules-load.d/k3s.conf")
    assert conf.user == "root"
    assert conf.mode == 0o644
    modules = [
        line.strip() for line in conf.content_string.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert modules == ["br_netfilter", "overlay"]


def test_k3s_sysctls_are_kept_for_boot(host):
    conf = host.file("/etc/sysctl.d/90-k3s.conf")
    assert conf.mode == 0o644
    settings = dict(
        (part.strip() for part in line.split("=", 1))
        for line in conf.content_string.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings == K3S_SYSCTLS
