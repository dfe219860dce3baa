"""Checks on the scenario `cluster`'s converged v1.36.3+k3s1 install, run in order by side_effect.yml.

Each test runs playbooks/cluster.yml as an operator would and then looks at the hosts: a second run changes
and restarts nothing and never shows the token, a wrong checksum stops the run before any node changes, a
changed label restarts only its node. pytest runs them top to bottom and -x stops at the first failure;
molecule's verify step then checks that install (its agent-1 keeps the label of the last test).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from harness import (
    AGENT_1,
    AGENT_2,
    HOSTS,
    OLD,
    RUN_DIR,
    SERVER,
    UNITS,
    connect,
    in_molecule,
    node,
    operator_token,
    pid,
    playbook,
    sh,
    state,
)

pytestmark = in_molecule


@pytest.fixture(scope="module")
def hosts() -> dict[str, Any]:
    return connect()


def test_a_rerun_at_vvv_changes_nothing_restarts_nothing_and_never_shows_the_token(
    hosts: dict[str, Any],
) -> None:
    before = state(hosts)
    run = playbook("-vvv", labels=False)
    assert run.rc == 0, run.tail()
    assert run.changed() == dict.fromkeys(HOSTS, 0), run.changed()
    after = state(hosts)
    for name in HOSTS:
        assert pid(after, name) == pid(before, name), f"{UNITS[name]} on {name} was restarted"
        assert after[name] == before[name]
    token = operator_token()
    # The whole token and every piece of it around one of its special characters (plain words such as "token"
    # appear in task names).
    words = re.split(r"([%$:\\]+)", token)
    secret_parts = [token, *("".join(words[i : i + 3]) for i in range(0, len(words) - 2, 2))]
    # Also as JSON or Python would escape them in a result.
    secret_parts += [json.dumps(part)[1:-1] for part in secret_parts] + [repr(token)[1:-1]]
    leaked = sorted({part for part in secret_parts if part in run.output})
    assert not leaked, f"the token (or a part of it) is in the -vvv output: {leaked}"
    # The server wrote the token in K3s's secure form, with the operator's secret after "::server:".
    stored = sh(hosts[SERVER], "cat /var/lib/rancher/k3s/server/token").strip()
    assert re.fullmatch(r"K10[0-9a-f]{64}::server:.+", stored)
    assert stored.endswith("::server:" + token)
    assert stored not in run.output
    # The operator's token reached the server only in its root-only file, byte for byte.
    assert sh(hosts[SERVER], "stat -c '%U %G %a' /etc/rancher/k3s/cluster-token").strip() == "root root 600"
    assert sh(hosts[SERVER], "cat /etc/rancher/k3s/cluster-token") == token + "\n"
    for name in (AGENT_1, AGENT_2):
        assert sh(hosts[name], "cat /etc/rancher/k3s/join-token").strip() == stored


def test_a_wrong_checksum_stops_the_run_before_any_node_changes(hosts: dict[str, Any]) -> None:
    good = RUN_DIR / f"k3s-{OLD}"
    bad = RUN_DIR / "k3s-tampered"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(good, bad)
    with (bad / "k3s").open("ab") as binary:
        binary.write(b"\n# tampered\n")
    sums = dict(line.split()[::-1] for line in (bad / "sha256sum-amd64.txt").read_text().splitlines())
    actual = subprocess.run(
        ["sha256sum", str(bad / "k3s")], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    before = state(hosts)
    run = playbook(extra={"gorkheavy_k3s_airgap_dir": str(bad)})
    assert run.rc != 0, run.tail()
    assert f"{bad}/k3s has sha256 {actual}, but sha256sum-amd64.txt says {sums['k3s']}" in run.flat, (
        run.tail()
    )
    assert "PLAY [Install the K3s server]" not in run.output
    assert set(run.changed().values()) == {0}, run.changed()
    assert state(hosts) == before


def test_a_changed_label_restarts_only_its_node(hosts: dict[str, Any]) -> None:
    before = state(hosts)
    run = playbook(labels=True)
    assert run.rc == 0, run.tail()
    changed = run.changed()
    assert changed[SERVER] == 0, changed
    assert changed[AGENT_2] == 0, changed
    assert changed[AGENT_1] > 0, changed
    # No agent is upgraded: the agents go in one batch.
    assert run.output.count("PLAY [Join the K3s agents]") == 1, run.tail()
    after = state(hosts)
    assert pid(after, AGENT_1) != pid(before, AGENT_1), "agent-1 kept its process"
    assert pid(after, SERVER) == pid(before, SERVER), "the server was restarted"
    assert pid(after, AGENT_2) == pid(before, AGENT_2), "agent-2 was restarted"
    config = yaml.safe_load(sh(hosts[AGENT_1], "cat /etc/rancher/k3s/config.yaml"))
    assert sorted(config["node-label"]) == ["gorkheavy.lite/models=true", "gorkheavy.lite/pool=a"]
    # K3s applies node-label only at registration; the role set it on the existing Node through the API.
    assert node(AGENT_1)["metadata"]["labels"]["gorkheavy.lite/pool"] == "a"
    assert "gorkheavy.lite/pool" not in node(AGENT_2)["metadata"]["labels"]
