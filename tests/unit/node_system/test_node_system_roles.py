"""The node system roles (swap, firewall, time_sync, k3s_prereqs) without a host.

Their variable contract (defaults against meta/argument_specs.yml), the fstab expression of the swap role run
the way ansible.builtin.replace runs it, and what their templates render to.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLES = ("swap", "firewall", "time_sync", "k3s_prereqs")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def render(role: str, template: str, **variables: Any) -> str:
    # Ansible renders templates with trim_blocks on and lstrip_blocks off.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROOT / "roles" / role / "templates"),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["dirname"] = os.path.dirname
    return env.get_template(template).render(ansible_managed="Ansible managed", **variables)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_the_argument_specs(role: str) -> None:
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    options = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, spec in options.items():
        assert name.startswith(role + "_"), name
        assert spec.get("type"), name
        assert spec.get("description"), name
        assert spec["default"] == defaults[name], name
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment_line(role: str) -> None:
    lines = (ROOT / "roles" / role / "defaults" / "main.yml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            assert lines[number - 1].startswith("# "), f"{role}: no comment above {line!r}"


@pytest.mark.parametrize("role", ROLES)
def test_readme_names_every_variable(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    for name in load(ROOT / "roles" / role / "defaults" / "main.yml"):
        assert f"`{name}`" in readme, name
    assert "## What is verified, and where" in readme


def fstab_rule() -> tuple[re.Pattern[str], str]:
    tasks = load(ROOT / "roles" / "swap" / "tasks" / "swap.yml")
    task = next(t for t in tasks if t.get("name") == "Comment out the swap lines of the fstab")
    replace = task["ansible.builtin.replace"]
    prefix = load(ROOT / "roles" / "swap" / "defaults" / "main.yml")["swap_fstab_comment_prefix"]
    # ansible.builtin.replace compiles with re.MULTILINE and substitutes with Python's re.subn.
    return re.compile(replace["regexp"], re.MULTILINE), replace["replace"].replace(
        "{{ swap_fstab_comment_prefix }}", prefix
    )


FSTAB = """\
# /etc/fstab: static file system information.
UUID=5c1e-root / ext4 errors=remount-ro 0 1
/swap.img\tnone\tswap\tsw\t0\t0
UUID=0a1b-swap none swap sw,pri=5 0 0
  /dev/sdb2   none   swap   defaults   0 0
# /old.swap none swap sw 0 0
/srv/swapdir /mnt/data ext4 defaults 0 2
tmpfs /tmp tmpfs defaults 0 0
/dev/zram0 none swap defaults,pri=100
"""


def test_fstab_swap_lines_are_commented_and_nothing_else() -> None:
    pattern, replacement = fstab_rule()
    result = pattern.sub(replacement, FSTAB)
    assert result.splitlines() == [
        "# /etc/fstab: static file system information.",
        "UUID=5c1e-root / ext4 errors=remount-ro 0 1",
        "#gorkheavy-swap-off# /swap.img\tnone\tswap\tsw\t0\t0",
        "#gorkheavy-swap-off# UUID=0a1b-swap none swap sw,pri=5 0 0",
        "#gorkheavy-swap-off#   /dev/sdb2   none   swap   defaults   0 0",
        "# /old.swap none swap sw 0 0",
        "/srv/swapdir /mnt/data ext4 defaults 0 2",
        "tmpfs /tmp tmpfs defaults 0 0",
        "#gorkheavy-swap-off# /dev/zram0 none swap defaults,pri=100",
    ]


def test_fstab_rule_is_idempotent() -> None:
    pattern, replacement = fstab_rule()
    once = pattern.sub(replacement, FSTAB)
    assert pattern.subn(replacement, once) == (once, 0)


def test_sysctl_file_lists_every_sysctl_once_sorted() -> None:
    text = render(
        "k3s_prereqs",
        "sysctl.conf.j2",
        __k3s_prereqs_all_sysctls={"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"},
    )
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == ["net.bridge.bridge-nf-call-iptables = 1", "net.ipv4.ip_forward = 1"]
    assert text.startswith("# Ansible managed\n")


def test_modules_file_lists_one_module_per_line() -> None:
    text = render("k3s_prereqs", "modules-load.conf.j2", k3s_prereqs_modules=["br_netfilter", "overlay"])
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["br_netfilter", "overlay"]


def test_timesyncd_dropin_has_servers_and_optional_fallback() -> None:
    plain = render(
        "time_sync",
        "timesyncd.conf.j2",
        time_sync_servers=["a.example", "b.example"],
        time_sync_fallback_servers=[],
    )
    assert "[Time]\nNTP=a.example b.example\n" in plain
    assert "FallbackNTP" not in plain
    fallback = render(
        "time_sync",
        "timesyncd.conf.j2",
        time_sync_servers=["a.example"],
        time_sync_fallback_servers=["c.example"],
    )
    assert "FallbackNTP=c.example" in fallback.splitlines()


def test_chrony_conf_asks_exactly_the_configured_servers() -> None:
    text = render(
        "time_sync",
        "chrony.conf.j2",
        time_sync_servers=["192.168.1.1", "ntp.example.org"],
        __time_sync_chrony_driftfile="/var/lib/chrony/chrony.drift",
        __time_sync_chrony_keyfile="/etc/chrony/chrony.keys",
        __time_sync_chrony_logdir="/var/log/chrony",
    )
    directives = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert [d for d in directives if d[0] in ("server", "pool", "peer")] == [
        ["server", "192.168.1.1", "iburst"],
        ["server", "ntp.example.org", "iburst"],
    ]
    assert ["driftfile", "/var/lib/chrony/chrony.drift"] in directives
    assert ["ntsdumpdir", "/var/lib/chrony"] in directives
