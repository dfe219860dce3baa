"""The firewall role on a host that does not forward packets yet, over SSH (a host of its own, so this module
runs beside test_node_system_variants.py's)."""

from __future__ import annotations

import pytest

from tests.integration.node_system.conftest import NodeHost, controller_address

pytestmark = [pytest.mark.hosts, pytest.mark.slow]


def test_ufw_on_a_host_that_does_not_forward_yet(fresh_testhost: NodeHost) -> None:
    """A fresh VM before k3s_prereqs turned forwarding on: ufw says "disabled (routed)". The firewall role
    checks the routed policy it stored instead and says forwarded traffic waits for forwarding, so its result
    does not depend on the order of the roles or on what the machine's kernel left in new network
    namespaces."""
    assert fresh_testhost.out("cat /proc/sys/net/ipv4/ip_forward").strip() == "0"
    variables = {
        "node_system_roles": ["firewall"],
        "firewall_ufw_enabled": True,
        "firewall_ssh_unlimited_sources": [controller_address(fresh_testhost)],
    }
    first = fresh_testhost.converge(variables)
    assert first.rc == 0, first.output[-4000:]
    flat = " ".join(first.output.split())
    assert 'The routed policy "allow" is stored, but IP forwarding is off' in flat, first.output[-3000:]
    second = fresh_testhost.converge(variables)
    assert second.rc == 0, second.output[-4000:]
    assert second.changed == 0, second.output[-4000:]
    check = fresh_testhost.converge(variables, check=True)
    assert check.rc == 0, check.output[-4000:]
    assert check.changed == 0, check.output[-4000:]
    assert "Default: deny (incoming), allow (outgoing), disabled (routed)" in fresh_testhost.out(
        "ufw status verbose"
    )
    assert 'DEFAULT_FORWARD_POLICY="ACCEPT"' in fresh_testhost.out("cat /etc/default/ufw").splitlines()
    # The forward chain does accept once the kernel forwards: its policy is what ufw stored.
    assert "Chain FORWARD (policy ACCEPT" in fresh_testhost.out("iptables -L FORWARD -n | head -1")
