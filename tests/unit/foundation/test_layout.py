"""The collection's layout and contracts: what every later stage stands on."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
STAGES = ["provision", "prepare", "cluster", "ensemble"]
BIN = Path(sys.executable).parent


def _yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _roles() -> list[Path]:
    return sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def test_design_card_layout_is_in_place() -> None:
    for name in ["playbooks", "roles", "inventory", "collections", "app", "molecule", "tests"]:
        assert (ROOT / name).is_dir(), f"missing directory {name}/"
    for name in [
        "ansible.cfg",
        "pyproject.toml",
        "site.yml",
        "README.md",
        ".ci/run",
        "galaxy.yml",
        "meta/runtime.yml",
    ]:
        assert (ROOT / name).is_file(), f"missing file {name}"
    assert (ROOT / "app" / "gorkheavy" / "__init__.py").is_file()


def test_collection_metadata() -> None:
    galaxy = _yaml(ROOT / "galaxy.yml")
    assert isinstance(galaxy, dict)
    assert (galaxy["namespace"], galaxy["name"]) == ("gorkheavy", "lite")
    runtime = _yaml(ROOT / "meta" / "runtime.yml")
    assert isinstance(runtime, dict)
    assert re.match(r"^>=\s*2\.\d+", runtime["requires_ansible"])
    link = ROOT / "collections" / "ansible_collections" / "gorkheavy" / "lite"
    assert link.is_symlink()
    assert link.resolve() == ROOT


def test_site_imports_the_stages_in_order_each_tagged() -> None:
    plays = _yaml(ROOT / "site.yml")
    assert isinstance(plays, list)
    assert plays, "site.yml imports no stage"
    imported = []
    for play in plays:
        target = play["ansible.builtin.import_playbook"]
        stage = Path(target).stem
        assert target == f"playbooks/{stage}.yml"
        assert (ROOT / target).is_file(), f"site.yml imports {target}, which does not exist"
        assert stage in play.get("tags", []), f"the import of {target} must carry the tag {stage}"
        imported.append(stage)
    assert imported == [s for s in STAGES if s in imported], f"stages out of order: {imported}"
    # A stage playbook that exists is imported; one that is absent is not faked.
    present = [s for s in STAGES if (ROOT / "playbooks" / f"{s}.yml").is_file()]
    assert imported == present


@pytest.mark.parametrize("stage", STAGES)
def test_stage_playbooks_carry_their_own_tag(stage: str) -> None:
    path = ROOT / "playbooks" / f"{stage}.yml"
    if not path.is_file():
        pytest.skip(f"stage {stage} is not part of the collection yet")
    plays = _yaml(path)
    assert isinstance(plays, list)
    for play in plays:
        if "ansible.builtin.import_playbook" in play:
            continue
        assert stage in play.get("tags", []), f"play {play.get('name')!r} in {path.name} lacks tag {stage}"


@pytest.mark.parametrize("role", _roles(), ids=lambda p: p.name)
def test_role_has_a_prefixed_argument_spec_covering_its_defaults(role: Path) -> None:
    spec_path = role / "meta" / "argument_specs.yml"
    assert spec_path.is_file(), f"{role.name}: meta/argument_specs.yml is missing"
    spec = _yaml(spec_path)
    assert isinstance(spec, dict)
    options = spec["argument_specs"]["main"].get("options") or {}
    for name, option in options.items():
        assert name.startswith(f"{role.name}_"), f"{role.name}: variable {name} lacks the role prefix"
        assert option.get("description"), f"{role.name}: {name} has no description"
        assert option.get("type"), f"{role.name}: {name} has no type"
    defaults_path = role / "defaults" / "main.yml"
    if defaults_path.is_file():
        defaults = _yaml(defaults_path) or {}
        assert isinstance(defaults, dict)
        missing = sorted(set(defaults) - set(options))
        assert not missing, f"{role.name}: defaults not documented in argument_specs: {missing}"
    assert (role / "README.md").is_file(), f"{role.name}: README.md is missing"


def test_readme_variables_section_is_generated_from_the_specs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_role_docs.py"), "--check", str(ROOT / "README.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_python_dependency_has_a_version_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    for line in requirements:
        req = Requirement(line)
        if req.name == "gorkheavy-lite":
            continue
        ops = {spec.operator for spec in req.specifier}
        assert ops & {">=", "~=", "=="}, f"{line}: no lower bound"
        assert ops & {"<", "~=", "=="}, f"{line}: no upper bound"


def test_required_collections_have_ranges_and_ship_with_the_ansible_package() -> None:
    reqs = _yaml(ROOT / "collections" / "requirements.yml")
    assert isinstance(reqs, dict)
    listed = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "list", "--format", "yaml"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    available: set[str] = set()
    for collections in (yaml.safe_load(listed.stdout) or {}).values():
        available.update(collections)
    galaxy = _yaml(ROOT / "galaxy.yml")
    assert isinstance(galaxy, dict)
    assert {e["name"]: e["version"] for e in reqs["collections"]} == galaxy["dependencies"]
    for entry in reqs["collections"]:
        assert re.search(r">=.*<", entry["version"]), f"{entry['name']}: version must be a range"
        assert entry["name"] in available, f"{entry['name']} is not installed by the ansible package"


def test_example_inventory_graph() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", "inventory/example", "--graph"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    graph = result.stdout
    for needle in ["@k3s_cluster", "@k3s_server", "@k3s_agents", "k3s-server", "k3s-agent-1", "k3s-agent-2"]:
        assert needle in graph


def _secret_values(node: object, key: str = "") -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found.extend(_secret_values(v, str(k)))
    elif isinstance(node, list):
        for item in node:
            found.extend(_secret_values(item, key))
    elif re.search(r"secret|password|token_value", key):
        found.append((key, node))
    return found


def test_no_plain_text_secret_in_the_example_inventory() -> None:
    for path in (ROOT / "inventory").rglob("*.yml"):
        for key, value in _secret_values(_yaml(path)):
            text = str(value).strip()
            assert text.startswith("{{") or not text, f"{path}: {key} holds a literal value"


@pytest.mark.slow
def test_collection_builds_installs_and_its_roles_resolve(tmp_path: Path) -> None:
    # A neutral configuration: the repository's ansible.cfg puts this checkout on the collections path,
    # which would make the install below a no-op.
    env = {
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "installed"),
        "ANSIBLE_ROLES_PATH": str(tmp_path / "none"),
        "HOME": str(tmp_path),
        "PATH": f"{BIN}:/usr/bin:/bin",
    }
    build = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    tarballs = list(tmp_path.glob("gorkheavy-lite-*.tar.gz"))
    assert len(tarballs) == 1, build.stdout
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
    assert "MANIFEST.json" in names
    generated = (".venv", ".git/", ".lab/", "collections/ansible_collections")
    assert not [n for n in names if n.startswith(generated)]
    install_dir = tmp_path / "installed"
    subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--no-deps",
            "-p",
            str(install_dir),
            str(tarballs[0]),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    installed = install_dir / "ansible_collections" / "gorkheavy" / "lite"
    roles = [p.name for p in _roles()]
    for role in roles:
        assert (installed / "roles" / role / "meta" / "argument_specs.yml").is_file()
    if not roles:
        return
    play = tmp_path / "uses_roles.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Resolve every role by its FQCN",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [f"gorkheavy.lite.{role}" for role in roles],
                }
            ]
        ),
        encoding="utf-8",
    )
    check = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", str(play)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert check.returncode == 0, check.stdout + check.stderr
