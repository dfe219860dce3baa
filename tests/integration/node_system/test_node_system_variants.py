"""The non-default choices of the node system roles on a real systemd host over SSH.

One host per module; the tests run in file order and each starts from the state the previous one left, the way
an operator changes settings on a running cluster: first ufw on (SSH first, K3s and WireGuard ports, allowed
sources) with chrony, then back to the defaults, then the reporting of an unsynchronised clock and bad input.
Every converge is repeated and must report changed=0 the second time. A host that does not forward yet is
test_node_system_fresh_host.py's.
"""

from __future__ import annotations

import re

import pytest
from ssh_audit.dheat import DHEat

from tests.hosts.systemd_host import connection_rate_from_another_host
from tests.integration.node_system.conftest import NodeHost, controller_address

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

NODE_NETWORK = "10.88.0.0/16"
SERVERS = ["ntp1.example.net", "ntp2.example.net"]
ENABLED = {
    "firewall_ufw_enabled": True,
    "firewall_flannel_backend": "wireguard-native",
    "firewall_k3s_sources": [NODE_NETWORK],
    "firewall_extra_rules": [
        {"port": "9100", "proto": "tcp", "from": NODE_NETWORK, "comment": "node exporter"}
    ],
    "time_sync_daemon": "chrony",
    "time_sync_servers": SERVERS,
    "k3s_prereqs_ipv6_forwarding": True,
    "swap_extra_units": ["swapfile.swap"],
}
FSTAB_SWAP = [
    "UUID=0a1b2c3d-1111-2222-3333-444455556666 none swap sw,pri=5 0 0",
    "/swapfile\tnone\tswap\tdefaults\t0\t0",
]


def converge_twice(testhost: NodeHost, variables: dict[str, object]) -> None:
    first = testhost.converge(variables)
    assert first.rc == 0, first.output[-4000:]
    second = testhost.converge(variables)
    assert second.rc == 0, second.output[-4000:]
    assert second.changed == 0, f"second run changed something:\n{second.output[-4000:]}"


def ufw_rules(testhost: NodeHost) -> list[str]:
    """The rules as `ufw status numbered` lists them, in order, without the numbers."""
    listing = testhost.out("ufw status numbered")
    return [
        re.sub(r"^\[\s*\d+\]\s+", "", line).strip() for line in listing.splitlines() if line.startswith("[")
    ]


def test_ufw_on_with_k3s_ports_and_chrony(testhost: NodeHost) -> None:
    testhost.out("printf '%s\\n' " + " ".join(f"'{line}'" for line in FSTAB_SWAP) + " >> /etc/fstab")
    # The controller is exempt from the SSH rate limit: this test opens many connections in a row.
    controller = controller_address(testhost)
    enabled = {**ENABLED, "firewall_ssh_unlimited_sources": [controller]}

    converge_twice(testhost, enabled)
    check = testhost.converge(enabled, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert check.changed == 0, check.output[-4000:]

    # ufw: active, SSH first (the controller unlimited, everyone else rate-limited), the K3s and WireGuard
    # ports from the node network only. The host forwards packets, as a node does after k3s_prereqs, so ufw
    # shows the routed policy.
    assert testhost.out("cat /proc/sys/net/ipv4/ip_forward").strip() == "1"
    verbose = testhost.out("ufw status verbose")
    assert "Status: active" in verbose
    assert "Default: deny (incoming), allow (outgoing), allow (routed)" in verbose
    rules = ufw_rules(testhost)
    assert re.match(
        rf"22/tcp\s+ALLOW IN\s+{re.escape(controller)}\s+# gorkheavy ssh without rate limit$", rules[0]
    )
    assert re.match(r"22/tcp\s+LIMIT IN\s+Anywhere\s+# gorkheavy ssh$", rules[1]), rules
    for port in ("6443/tcp", "10250/tcp", "8472/udp", "51820:51821/udp", "9100/tcp"):
        assert any(
            re.match(rf"{re.escape(port)}\s+ALLOW IN\s+{re.escape(NODE_NETWORK)}\b", r) for r in rules
        ), (
            port,
            rules,
        )
        assert not any(re.match(rf"{re.escape(port)}\s+ALLOW IN\s+Anywhere\b", r) for r in rules), (
            port,
            rules,
        )
    for cidr in ("10.42.0.0/16", "10.43.0.0/16"):
        assert any(re.match(rf"Anywhere\s+ALLOW IN\s+{re.escape(cidr)}\b", r) for r in rules), (cidr, rules)
    # The operator is not locked out: a brand-new SSH connection still gets in.
    assert testhost.out("echo still-in").strip() == "still-in"

    # chrony: runs without clock control (-x) in a container, asks the configured servers, timesyncd is gone.
    assert testhost.out("systemctl is-active chrony").strip() == "active"
    assert testhost.out("systemctl is-enabled chrony").strip() == "enabled"
    assert 'DAEMON_OPTS="-F 1 -x"' in testhost.out("cat /etc/default/chrony").splitlines()
    assert re.search(r"/usr/sbin/chronyd .*-x", testhost.out("ps -o args= -C chronyd"))
    servers = [
        line.split()[1]
        for line in testhost.out("cat /etc/chrony/chrony.conf").splitlines()
        if line.startswith("server ")
    ]
    assert servers == SERVERS
    assert testhost.run("systemctl is-active systemd-timesyncd").stdout.strip() != "active"

    # Swap: every active swap line commented with the marker, the extra unit masked.
    fstab = testhost.out("cat /etc/fstab").splitlines()
    for line in FSTAB_SWAP:
        assert "#gorkheavy-swap-off# " + line in fstab
        assert line not in fstab
    assert testhost.out("systemctl is-enabled swapfile.swap || true").strip() == "masked"

    # K3s prerequisites: the dual-stack forwarding sysctl is kept for boot.
    sysctl_conf = testhost.out("cat /etc/sysctl.d/90-k3s.conf").splitlines()
    assert "net.ipv6.conf.all.forwarding = 1" in sysctl_conf


def test_ssh_connection_rate_from_another_address_stays_under_what_ssh_audit_calls_safe(
    testhost: NodeHost,
) -> None:
    # ufw is still on from the test above. ufw's limit rule refuses a source that opened 6 connections within
    # 30 seconds; the probe runs in a container of its own, so its address is not the exempt controller's.
    measured = connection_rate_from_another_host(testhost.address)
    assert measured["opened"] >= 1, (
        measured
    )  # sshd answered at first: the limit, not a dead port, slows it down
    assert measured["refused"] > 0, measured
    # At most 6 new connections per 30 s get through (with a plain allow rule: 60 in 4 s here, under load).
    assert measured["opened"] <= 6, measured
    assert measured["rate"] < DHEat.MAX_SAFE_RATE, measured
    # The controller itself is not limited.
    assert testhost.out("echo still-in").strip() == "still-in"


def test_back_to_the_defaults_turns_ufw_off_and_timesyncd_on(testhost: NodeHost) -> None:
    # Only these two roles have something to undo; the defaults of all four are molecule/prepare's subject.
    converge_twice(testhost, {"node_system_roles": ["firewall", "time_sync"]})
    assert testhost.out("ufw status").splitlines()[0] == "Status: inactive"
    assert testhost.out("systemctl is-active systemd-timesyncd").strip() == "active"
    assert testhost.run("systemctl is-active chrony").stdout.strip() != "active"
    # The rules stay stored (ufw disable keeps them), so turning ufw on again restores them at once.
    assert "port 6443 proto tcp" in testhost.out("ufw show added")


def test_an_unsynchronised_clock_is_reported(testhost: NodeHost) -> None:
    # The host has no CAP_SYS_TIME (checked by the fixture), so letting timesyncd "control" the clock is
    # harmless here: it cannot set it. NTPSynchronized mirrors the kernel's flag, that is the test machine's,
    # which a test must not change; so the host's timedatectl reports "no" for that one property while the
    # rest of timedatectl stays real.
    shim = "/usr/local/bin/timedatectl"
    testhost.out(
        f"printf '%s\\n' '#!/bin/sh' "
        "'case \"$*\" in *NTPSynchronized*) echo no; exit 0;; esac' "
        f"'exec /usr/bin/timedatectl \"$@\"' > {shim} && chmod 0755 {shim}"
    )
    try:
        assert testhost.out("timedatectl show --property=NTPSynchronized --value").strip() == "no"
        variables = {
            "node_system_roles": ["time_sync"],
            "time_sync_clock_control": "apply",
            "time_sync_verify_timeout": 5,
        }
        failing = testhost.converge({**variables, "time_sync_unsynchronised_action": "fail"})
        warning = testhost.converge({**variables, "time_sync_unsynchronised_action": "warn"})
    finally:
        testhost.out(f"rm -f {shim}")
    assert failing.rc != 0
    assert "is not synchronised after 5 s with timesyncd" in " ".join(failing.output.split())
    assert warning.rc == 0, warning.output[-4000:]
    assert "WARNING: the clock of" in warning.output


@pytest.mark.parametrize(
    ("variables", "messages"),
    [
        (
            {
                "node_system_roles": ["firewall"],
                "firewall_ufw_enabled": True,
                "firewall_k3s_sources": ["10.0.0.0/8", "10.0.0.300/40/1"],
            },
            ["an IPv4 or an IPv6 address or CIDR:", "10.0.0.300/40/1"],
        ),
        (
            {"node_system_roles": ["time_sync"], "time_sync_daemon": "ntpd"},
            ["time_sync_daemon must be one of: timesyncd, chrony, got: ntpd"],
        ),
        (
            {"node_system_roles": ["swap"], "swap_fstab_comment_prefix": "disabled "},
            ['swap_fstab_comment_prefix must start with "#"'],
        ),
    ],
)
def test_bad_input_is_refused_with_what_to_fix(
    testhost: NodeHost, variables: dict[str, object], messages: list[str]
) -> None:
    done = testhost.converge(variables)
    assert done.rc != 0
    flat = " ".join(done.output.split())
    for message in messages:
        assert message in flat, done.output[-3000:]
