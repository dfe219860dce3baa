"""Render the ensemble's manifests with the real playbook (playbooks/render.yml), as the tests read them.

Every test of this package reads what ``ansible-playbook playbooks/render.yml -i inventory/example`` writes,
so the objects under test are the ones the apply path sends. The orchestrator's wheelhouse is built once per
session into a temporary cache shared by the variants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
COLLECTIONS = ROOT / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

Obj = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One render: the directory, the playbook's recap and the objects by (kind, name)."""

    directory: Path
    recap: str
    objects: dict[tuple[str, str], Obj]
    files: dict[str, list[Obj]]

    def get(self, kind: str, name: str) -> Obj:
        return self.objects[(kind, name)]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for (k, _n), o in self.objects.items() if k == kind]


def run_ansible(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """An ansible command of this virtual environment, from the repository root with its ansible.cfg."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "ANSIBLE_NOCOLOR": "1"}
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, check=False, env=env, timeout=timeout
    )


def render_command(out: Path, cache: Path, extra_vars: dict[str, Any] | None = None) -> list[str]:
    """playbooks/render.yml on inventory/example into ``out``, with the wheelhouse cache ``cache``."""
    args = [
        str(BIN / "ansible-playbook"),
        "-i",
        "inventory/example",
        "playbooks/render.yml",
        "-e",
        f"gorkheavy_render_dir={out}",
        "-e",
        f"orchestrator_artifact_cache_dir={cache}",
    ]
    if extra_vars:
        args += ["-e", json.dumps(extra_vars)]
    return args


def run_render(out: Path, cache: Path, extra_vars: dict[str, Any] | None = None) -> Rendered:
    result = run_ansible(render_command(out, cache, extra_vars))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recap = result.stdout[result.stdout.rfind("PLAY RECAP") :]
    objects: dict[tuple[str, str], Obj] = {}
    files: dict[str, list[Obj]] = {}
    for path in sorted(out.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        files[path.name] = docs
        for doc in docs:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} rendered twice"
            objects[key] = doc
    return Rendered(out, recap, objects, files)


def example_roster() -> list[Obj]:
    data = yaml.safe_load((ROOT / "inventory/example/group_vars/all/main.yml").read_text(encoding="utf-8"))
    roster: list[Obj] = data["gorkheavy_models"]
    return roster


OLLAMA_DIGEST = "sha256:" + "a1" * 32
PYTHON_DIGEST = "sha256:" + "b2" * 32


def options_vars() -> dict[str, Any]:
    """Every optional switch on at once: a GPU model, the vault's secrets, PostgreSQL memory, the Ingress with
    TLS, both images pinned by digest, another keep-alive."""
    roster = example_roster()
    for entry in roster:
        if entry["name"] == "llama":
            entry["gpu"] = True
    return {
        "gorkheavy_models": roster,
        "gorkheavy_api_token": "s3cr3t-token",
        "gorkheavy_memory_store": "postgresql",
        "gorkheavy_memory_dsn": "postgresql://gorkheavy:pw@db.lan:5432/gorkheavy",
        "gorkheavy_ingress_enabled": True,
        "gorkheavy_ingress_host": "ensemble.lan",
        "gorkheavy_ingress_tls_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "gorkheavy_ingress_tls_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        "gorkheavy_ollama_image_digest": OLLAMA_DIGEST,
        "gorkheavy_ollama_keep_alive": "1h",
        "orchestrator_image_digest": PYTHON_DIGEST,
    }
