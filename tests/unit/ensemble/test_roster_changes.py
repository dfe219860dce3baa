"""A roster swap and a model removal change exactly the objects they should; a re-render changes nothing."""

from __future__ import annotations

import shutil

from tests.unit.ensemble.rendering import ROOT, Rendered, example_roster, run_render

ansible_filters = __import__(
    "ansible_collections.gorkheavy.lite.plugins.filter.k8s", fromlist=["k8s_unwanted", "k8s_in_set"]
)


def _changed(
    before: Rendered, after: Rendered
) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
    added = set(after.objects) - set(before.objects)
    removed = set(before.objects) - set(after.objects)
    changed = {k for k in set(before.objects) & set(after.objects) if before.objects[k] != after.objects[k]}
    return added, removed, changed


def test_swapping_a_model_changes_that_model_and_the_orchestrator_only(
    example: Rendered, render: object
) -> None:
    roster = example_roster()
    for entry in roster:
        if entry["name"] == "qwen":
            entry["model"] = "qwen2.5-coder:3b"
    swapped = render("swap", {"gorkheavy_models": roster})  # type: ignore[operator]
    added, removed, changed = _changed(example, swapped)
    assert added == set()
    assert removed == set()
    assert changed == {
        ("Deployment", "qwen"),
        ("ConfigMap", "orchestrator-config"),
        ("Deployment", "orchestrator"),
    }
    pod = swapped.get("Deployment", "qwen")["spec"]["template"]
    assert {"name": "GORKHEAVY_MODEL", "value": "qwen2.5-coder:3b"} in pod["spec"]["containers"][0]["env"]
    # The orchestrator rolls through its config checksum, with the same artifact.
    old = example.get("Deployment", "orchestrator")["spec"]["template"]["metadata"]["annotations"]
    new = swapped.get("Deployment", "orchestrator")["spec"]["template"]["metadata"]["annotations"]
    assert old["gorkheavy.lite/artifact-sha256"] == new["gorkheavy.lite/artifact-sha256"]
    assert old["gorkheavy.lite/config-sha256"] != new["gorkheavy.lite/config-sha256"]
    assert "qwen2.5-coder:3b" in swapped.get("ConfigMap", "orchestrator-config")["data"]["config.yml"]


def test_removing_a_model_deletes_its_objects_and_nothing_else(example: Rendered, render: object) -> None:
    roster = [e for e in example_roster() if e["name"] != "llama"]
    smaller = render("removal", {"gorkheavy_models": roster})  # type: ignore[operator]
    added, removed, changed = _changed(example, smaller)
    assert added == set()
    assert removed == {
        ("Deployment", "llama"),
        ("Service", "llama"),
        ("PersistentVolumeClaim", "llama-store"),
    }
    assert changed == {("ConfigMap", "orchestrator-config"), ("Deployment", "orchestrator")}
    # What the apply path deletes: the pruning filter, fed with a listing of the cluster as the first run left
    # it
    # (plus an object of another set and one not managed by this collection), picks exactly the removed
    # objects.
    listing = []
    for kind, api_version in (("Deployment", "apps/v1"), ("Service", "v1"), ("PersistentVolumeClaim", "v1")):
        resources = [o for (k, _n), o in example.objects.items() if k == kind]
        resources.append(
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "name": "stray",
                    "namespace": "gorkheavy",
                    "labels": {"gorkheavy.lite/set": "gorkheavy-models"},
                },
            }
        )
        listing.append({"resources": resources})
    wanted = list(smaller.files["20-models.yaml"])
    unwanted = ansible_filters.k8s_unwanted(listing, wanted, "gorkheavy-models")
    assert {(u["kind"], u["name"]) for u in unwanted} == removed
    assert all(u["namespace"] == "gorkheavy" for u in unwanted)


def test_rendering_again_changes_nothing(example: Rendered, artifact_cache: object) -> None:
    again = run_render(example.directory, artifact_cache)  # type: ignore[arg-type]
    assert "changed=0" in again.recap, again.recap
    assert again.objects == example.objects


def test_a_new_build_of_the_app_rolls_the_orchestrator_and_nothing_else(
    example: Rendered, tmp_path_factory: object, artifact_cache: object
) -> None:
    # A copy of the repository's app with one more line in a module: a new artifact, so a new pod template.
    source = tmp_path_factory.mktemp("source")  # type: ignore[attr-defined]
    shutil.copy(ROOT / "pyproject.toml", source / "pyproject.toml")
    shutil.copytree(
        ROOT / "app" / "gorkheavy", source / "app" / "gorkheavy", ignore=shutil.ignore_patterns("__pycache__")
    )
    with (source / "app" / "gorkheavy" / "__init__.py").open("a", encoding="utf-8") as handle:
        handle.write("\n# a new build\n")
    rebuilt = run_render(
        tmp_path_factory.mktemp("render-rebuilt"),  # type: ignore[attr-defined]
        artifact_cache,  # type: ignore[arg-type]
        {"orchestrator_source_dir": str(source)},
    )
    added, removed, changed = _changed(example, rebuilt)
    assert (added, removed, changed) == (set(), set(), {("Deployment", "orchestrator")})
    old = example.get("Deployment", "orchestrator")["spec"]["template"]["metadata"]["annotations"]
    new = rebuilt.get("Deployment", "orchestrator")["spec"]["template"]["metadata"]["annotations"]
    assert old["gorkheavy.lite/artifact"] != new["gorkheavy.lite/artifact"]
