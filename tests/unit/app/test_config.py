"""The configuration file: defaults, both roster shapes, and errors that say what to fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import uvloop
import yaml
from gorkheavy.config import ConfigError, build, load
from gorkheavy.core.types import Strategy
from gorkheavy.runtime import EventLoopUnavailable, event_loop_factory

EXAMPLE = Path(__file__).parents[3] / "app" / "gorkheavy" / "roster.example.yml"


def test_defaults_are_the_design_documents_roster_and_service_names() -> None:
    config = build({})
    roster = config.pipeline.roster
    assert roster.promptimizer is not None
    assert (roster.promptimizer.model, roster.promptimizer.base_url) == (
        "granite4:350m",
        "http://promptimizer:11434",
    )
    assert [(e.name, e.model, e.optimized_query) for e in roster.experts] == [
        ("qwen-small", "qwen3:0.6b", True),
        ("qwen", "qwen2.5-coder:1.5b", False),
        ("llama", "llama3.2:1b", False),
    ]
    assert [e.base_url for e in roster.experts] == [
        "http://qwen-small:11434",
        "http://qwen:11434",
        "http://llama:11434",
    ]
    assert (roster.judge.model, roster.judge.base_url) == ("gemma3:1b", "http://judge:11434")
    assert config.pipeline.strategy is Strategy.SELECT
    assert config.pipeline.memory_turns == 5


def test_the_inventory_model_list_shape_is_accepted_and_extra_keys_are_only_warned_about() -> None:
    inventory = [
        {"name": "promptimizer", "model": "granite4:350m", "role": "promptimizer", "optimized_query": False},
        {
            "name": "qwen-small",
            "model": "qwen3:0.6b",
            "role": "expert",
            "optimized_query": True,
            "memory": "1Gi",
        },
        {"name": "llama", "model": "llama3.2:1b", "role": "expert", "optimized_query": False},
        {"name": "judge", "model": "gemma3:1b", "role": "judge", "optimized_query": False},
    ]
    config = build({"models": inventory})
    assert [e.name for e in config.pipeline.roster.experts] == ["qwen-small", "llama"]
    assert config.warnings == ("models[1] (qwen-small): ignoring unknown key 'memory'",)


def test_adding_an_expert_is_a_config_change() -> None:
    config = build(
        {
            "judge": {"name": "judge", "model": "gemma3:1b"},
            "experts": [
                {"name": "a", "model": "m1", "base_url": "http://10.0.0.1:11434/"},
                {"name": "b", "model": "m2"},
                {"name": "c", "model": "m3"},
                {"name": "d", "model": "m4"},
            ],
        }
    )
    experts = config.pipeline.roster.experts
    assert [e.name for e in experts] == ["a", "b", "c", "d"]
    assert experts[0].base_url == "http://10.0.0.1:11434"
    assert config.pipeline.roster.promptimizer is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"stratgy": "select"}, "stratgy: unknown setting; remove it or check its spelling"),
        ({"strategy": "best"}, "strategy: Input should be 'select' or 'synthesize' (got 'best')"),
        ({"timeouts": {"expert": 0}}, "timeouts.expert: Input should be greater than 0"),
        ({"models": [{"name": "j", "model": "g", "role": "judje"}]}, "models[0].role: Input should be"),
        ({"models": [{"name": "j", "role": "judge"}]}, "models[0].model: required; add it"),
        ({"models": [{"name": "Bad Name", "model": "g", "role": "judge"}]}, "models[0].name: use lowercase"),
        (
            {"models": [{"name": "j", "model": "g", "role": "judge", "base_url": "judge:11434"}]},
            "http(s) URL",
        ),
        ({"models": [{"name": "j", "model": "g", "role": "judge", "optimized_query": True}]}, "experts only"),
        ({"models": [{"name": "j", "model": "g", "role": "judge"}]}, "no expert; add at least one"),
        (
            {"models": [{"name": "e", "model": "g", "role": "expert"}]},
            "exactly one judge is needed (found none)",
        ),
        (
            {
                "models": [
                    {"name": "e", "model": "g", "role": "expert"},
                    {"name": "e", "model": "h", "role": "judge"},
                ]
            },
            "models[1].name: 'e' is used twice",
        ),
        ({"memory": {"store": "postgresql", "dsn": "mysql://x"}}, "dsn must start with postgresql://"),
        ({"keep_alive": "forever"}, "keep_alive: use an Ollama duration"),
        (
            {
                "judge": {"name": "j", "model": "g", "base_url": "http://qwen:abc"},
                "experts": [{"name": "e", "model": "g"}],
            },
            "judge.base_url: the port must be a number from 1 to 65535",
        ),
        (
            {"models": [{"name": "e", "model": "g", "role": "expert", "base_url": "http://qwen:99999"}]},
            "models[0].base_url: the port must be a number from 1 to 65535",
        ),
        (
            {"models": [{"name": "e", "model": "g", "role": "expert", "base_url": "http://[bad"}]},
            "models[0].base_url: write an http(s) URL",
        ),
        (
            {"models": [{"name": "e", "model": "g", "role": "expert", "base_url": "http://:80"}]},
            "models[0].base_url: write an http(s) URL",
        ),
        ({"keep_alive": "30" + "x"}, "keep_alive: use an Ollama duration"),
        ({"keep_alive": "1h30"}, "keep_alive: use an Ollama duration"),
        ({"keep_alive": True}, "keep_alive: use an Ollama duration"),
        ({"models": [], "judge": {"name": "j", "model": "g"}}, "give the roster once"),
    ],
)
def test_errors_name_the_field_and_the_fix(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(data, "roster.yml")
    assert str(caught.value).startswith("roster.yml:")
    assert expected in str(caught.value)


def test_load_reads_the_path_then_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "c.yml"
    file.write_text("strategy: synthesize\n")
    assert load(file, {}).pipeline.strategy is Strategy.SYNTHESIZE
    assert load(None, {"GORKHEAVY_CONFIG": str(file)}).pipeline.strategy is Strategy.SYNTHESIZE
    assert load(None, {}).source == "<defaults>"


def test_load_explains_missing_files_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file; check --config or \$GORKHEAVY_CONFIG"):
        load(tmp_path / "absent.yml", {})
    broken = tmp_path / "broken.yml"
    broken.write_text("strategy: select\nmodels: [\n  {name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(broken, {})
    listed = tmp_path / "list.yml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(listed, {})


def test_the_example_file_is_valid_and_matches_the_defaults() -> None:
    config = load(EXAMPLE, {})
    assert config.pipeline.roster == build({}).pipeline.roster
    assert yaml.safe_load(EXAMPLE.read_text())["models"][1]["optimized_query"] is True


def test_the_event_loop_of_serve_is_uvloop_unless_asked_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build({}).server.event_loop == "auto"
    assert build({"server": {"event_loop": "asyncio"}}).server.event_loop == "asyncio"
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed
    assert event_loop_factory("auto") is None
    with pytest.raises(EventLoopUnavailable, match=r"pip install uvloop\) or set server.event_loop: auto"):
        event_loop_factory("uvloop")
