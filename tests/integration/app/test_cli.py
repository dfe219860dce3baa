"""The gorkheavy command as a user runs it: ask, doctor, and chat driven through a pseudo-terminal."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml
from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin

from .conftest import MODELS, roster

ROOT = Path(__file__).parents[3]


@pytest.fixture
def standin() -> Iterator[tuple[OllamaStandin, str]]:
    standin = OllamaStandin({model: ModelBehavior() for model in MODELS.values()})
    with standin.serve_in_thread() as url:
        yield standin, url


def write_config(tmp_path: Path, url: str, **settings: Any) -> Path:
    data = roster(url, memory={"store": "sqlite", "path": str(tmp_path / "memory.db")})
    data.update(settings)
    path = tmp_path / "gorkheavy.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "TERM": "xterm", "NO_COLOR": "1"}


def gorkheavy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gorkheavy", *args],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def qwen_chats(standin: OllamaStandin) -> list[Any]:
    return standin.requests_for(path="/api/chat", model=MODELS["qwen"])


def test_ask_prints_the_answer(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    _, url = standin
    config = write_config(tmp_path, url)
    done = gorkheavy(tmp_path, "ask", "What is K3s?", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split(" answer ")[0] in MODELS.values()
    assert done.stderr == ""  # no progress indicator when stderr is not a terminal


def test_ask_json_and_config_from_the_environment(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    _, url = standin
    config = write_config(tmp_path, url)
    done = subprocess.run(
        [sys.executable, "-m", "gorkheavy", "ask", "What is K3s?", "--json"],
        capture_output=True,
        text=True,
        env={**env(tmp_path), "GORKHEAVY_CONFIG": str(config)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["winner"] in {"qwen-small", "qwen", "llama"}
    assert result["verdict_source"] == "structured"
    assert {c["name"] for c in result["candidates"]} == {"qwen-small", "qwen", "llama"}
    assert set(result["timings"]) >= {"promptimizer", "experts", "judge", "total"}


def test_memory_survives_a_restart_of_the_process(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    server, url = standin
    config = str(write_config(tmp_path, url))
    assert (
        gorkheavy(
            tmp_path, "ask", "What's the capital of France?", "--session", "trip", "--config", config
        ).returncode
        == 0
    )
    assert (
        gorkheavy(
            tmp_path, "ask", "What's its population?", "--session", "trip", "--config", config
        ).returncode
        == 0
    )
    messages = qwen_chats(server)[-1].body["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "What's the capital of France?",
        "What's its population?",
    ]


def test_all_experts_down_is_a_clear_error_without_traceback(
    tmp_path: Path, standin: tuple[OllamaStandin, str]
) -> None:
    server, url = standin
    for name in ("qwen-small", "qwen", "llama"):
        server.configure(MODELS[name], failure="http_500")
    done = gorkheavy(tmp_path, "ask", "hello", "--config", str(write_config(tmp_path, url)))
    assert done.returncode == 1
    assert "Error: no expert produced an answer" in done.stderr
    assert "qwen: qwen (qwen2.5-coder:1.5b at" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("strategy: vote\ntimeouts:\n  expert: -3\n")
    done = gorkheavy(tmp_path, "ask", "hi", "--config", str(path))
    assert done.returncode == 2
    assert "strategy: Input should be 'select' or 'synthesize' (got 'vote')" in done.stderr
    assert "timeouts.expert: Input should be greater than 0 (got -3" in done.stderr
    assert "Traceback" not in done.stderr


def test_doctor_reports_ready_backends(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    _, url = standin
    done = gorkheavy(tmp_path, "doctor", "--config", str(write_config(tmp_path, url)))
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("\nok   ") == 6  # five models and the memory store
    assert "all backends ready" in done.stdout


def test_doctor_says_what_to_fix(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    server, url = standin
    server.remove_model(MODELS["llama"])
    data = roster(url, memory={"store": "none"})
    data["models"][4]["base_url"] = "http://127.0.0.1:9"
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    done = gorkheavy(tmp_path, "doctor", "--config", str(path), "--timeout", "2")
    assert done.returncode == 1
    assert f"fix: pull it with: OLLAMA_HOST={url} ollama pull llama3.2:1b" in done.stdout
    assert "FAIL judge" in done.stdout
    assert "fix: check that http://127.0.0.1:9 is served" in done.stdout
    assert "2 problem(s) found" in done.stdout
    report = json.loads(gorkheavy(tmp_path, "doctor", "--config", str(path), "--json").stdout)
    assert report["ok"] is False
    assert {b["name"] for b in report["backends"] if not b["ok"]} == {"llama", "judge"}


# -- the interactive session ----------------------------------------------------------------------------


def _as_a_background_job() -> None:
    """What a shell without job control gives a command it starts with ``&``: SIGINT and SIGQUIT ignored."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)


def spawn_chat(tmp_path: Path, config: Path, *extra: str, background: bool = False) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gorkheavy", "chat", "--config", str(config), *extra],
        env=env(tmp_path),
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 200),
        preexec_fn=_as_a_background_job if background else None,
    )
    child.expect_exact("YOU: ")
    return child


def ask(child: pexpect.spawn, line: str) -> str:
    child.sendline(line)
    child.expect(r"Reply: (.*?)\r\n")
    reply = str(child.match.group(1))
    child.expect_exact("YOU: ")
    return reply


def test_chat_answers_follow_ups_and_exits_cleanly(
    tmp_path: Path, standin: tuple[OllamaStandin, str]
) -> None:
    server, url = standin
    child = spawn_chat(tmp_path, write_config(tmp_path, url))
    first = ask(child, "What's the capital of France?")
    assert " answer " in first
    ask(child, "What's its population?")
    messages = qwen_chats(server)[-1].body["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "What's the capital of France?",
        "What's its population?",
    ]
    assert messages[2] == {"role": "assistant", "content": first}
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "state" / "gorkheavy" / "chat_history").read_text().count("What's") == 2


@pytest.mark.parametrize("how", ["quit", "eof", "ctrl-c"])
def test_chat_ends_cleanly_on_quit_eof_and_ctrl_c(
    tmp_path: Path, standin: tuple[OllamaStandin, str], how: str
) -> None:
    _, url = standin
    child = spawn_chat(tmp_path, write_config(tmp_path, url))
    if how == "quit":
        child.sendline("quit")
    elif how == "eof":
        child.sendeof()
    else:
        child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")


# started with SIGINT ignored as well: a person at the terminal still interrupts the chat
@pytest.mark.parametrize("background", [False, True], ids=["foreground", "sigint-ignored"])
def test_ctrl_c_during_an_answer_cancels_it_and_a_second_at_the_prompt_leaves(
    tmp_path: Path, standin: tuple[OllamaStandin, str], background: bool
) -> None:
    server, url = standin
    server.configure(MODELS["judge"], failure="hang")
    child = spawn_chat(tmp_path, write_config(tmp_path, url), background=background)
    child.sendline("a question that is never decided")
    child.expect_exact("judge...")  # the progress line on the terminal shows the judge at work
    child.sendintr()
    child.expect_exact("(cancelled)")
    child.expect_exact("YOU: ")  # back at the prompt, the session goes on
    server.configure(MODELS["judge"], failure="none")
    assert " answer " in ask(child, "and now a question that is answered")
    child.sendintr()  # at the prompt: leave
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")


def test_chat_shows_terminal_control_sequences_instead_of_obeying_them(
    tmp_path: Path, standin: tuple[OllamaStandin, str]
) -> None:
    server, url = standin
    hostile = "clear\x1b[2J title\x1b]0;pwned\x07 back\r\x9b31m"
    for name in ("qwen-small", "qwen", "llama"):
        server.behavior(MODELS[name]).reply = hostile
    child = spawn_chat(tmp_path, write_config(tmp_path, url), "--show-candidates")
    child.sendline("hi")
    child.expect_exact("YOU: ")
    shown = child.before or ""
    assert "Reply: clear^[[2J title^[]0;pwned^G back^M<U+009B>31m" in shown
    assert "\x1b[2J" not in shown
    assert "\x1b]0;" not in shown
    assert "\x07" not in shown
    child.sendline("exit")
    child.expect(pexpect.EOF)


def test_chat_line_editing_history_and_candidates(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    server, url = standin
    child = spawn_chat(tmp_path, write_config(tmp_path, url), "--show-candidates", "--session", "edit")
    child.send("bc?\x01A\r")  # type "bc?", Ctrl-A to the start of the line, insert "A", Enter
    child.expect(r"Reply: ")
    child.expect(r"\(winner: (\S+), decided by: structured\)")
    winner = child.match.group(1)
    assert winner in {"qwen-small", "qwen", "llama"}
    child.expect(r"\* " + winner)
    child.expect_exact("YOU: ")
    assert (
        server.requests_for(path="/api/chat", model=MODELS["qwen"])[-1].body["messages"][-1]["content"]
        == "Abc?"
    )
    child.send("\x1b[A\r")  # arrow up recalls the previous line
    child.expect(r"Reply: ")
    child.expect_exact("YOU: ")
    assert [m["content"] for m in qwen_chats(server)[-1].body["messages"] if m["role"] == "user"] == [
        "Abc?",
        "Abc?",
    ]
    child.sendline("exit")
    child.expect(pexpect.EOF)


def test_chat_survives_all_experts_failing(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    server, url = standin
    child = spawn_chat(tmp_path, write_config(tmp_path, url))
    for name in ("qwen-small", "qwen", "llama"):
        server.configure(MODELS[name], failure="http_500", failure_count=1)
    child.sendline("this one fails")
    child.expect_exact("Error: no expert produced an answer; the session is unchanged, try again.")
    child.expect_exact("YOU: ")
    assert " answer " in ask(child, "this one works")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ask_reads_stdin_and_takes_the_strategy(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    server, url = standin
    server.configure(MODELS["judge"], reply="One answer written from all of them.")
    done = subprocess.run(
        [sys.executable, "-m", "gorkheavy", "ask", "-", "--strategy", "synthesize", "--json"],
        input="What is K3s?\n",
        capture_output=True,
        text=True,
        env={**env(tmp_path), "GORKHEAVY_CONFIG": str(write_config(tmp_path, url))},
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["question"] == "What is K3s?"
    assert result["strategy"] == "synthesize"
    assert result["answer"] == "One answer written from all of them."
    assert result["winner"] == "judge"


def test_ask_refuses_an_empty_question(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    _, url = standin
    done = gorkheavy(tmp_path, "ask", "   ", "--config", str(write_config(tmp_path, url)))
    assert done.returncode == 2
    assert "the question is empty" in done.stderr


def test_doctor_reports_an_unusable_memory_store(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    _, url = standin
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    data = roster(url, memory={"store": "sqlite", "path": str(blocker / "memory.db")})
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    done = gorkheavy(tmp_path, "doctor", "--config", str(path))
    assert done.returncode == 1
    assert "FAIL memory: cannot open the SQLite memory" in done.stdout
    assert "set memory.path to a writable file" in done.stdout


def test_doctor_reports_a_backend_that_does_not_speak_http(
    tmp_path: Path, standin: tuple[OllamaStandin, str]
) -> None:
    _, url = standin

    class Garbage(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"SSH-2.0-x\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Garbage) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        data = roster(url, memory={"store": "none"})
        data["models"][2]["base_url"] = f"http://127.0.0.1:{server.server_address[1]}"
        path = tmp_path / "c.yml"
        path.write_text(yaml.safe_dump(data))
        try:
            done = gorkheavy(tmp_path, "doctor", "--config", str(path), "--timeout", "2")
            asked = gorkheavy(tmp_path, "ask", "hi", "--config", str(path))
        finally:
            server.shutdown()
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "FAIL qwen" in done.stdout
    assert "does not behave like an Ollama server" in done.stdout
    assert asked.returncode == 0, asked.stderr
    assert "Traceback" not in asked.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:s3cret@127.0.0.1:9/gorkheavy",
        "postgresql://app@127.0.0.1:9/gorkheavy?password=s3cret",
        "host=127.0.0.1 port=9 user=app password=s3cret dbname=gorkheavy",
    ],
)
def test_doctor_never_prints_a_password(tmp_path: Path, standin: tuple[OllamaStandin, str], dsn: str) -> None:
    _, url = standin
    data = roster(url, memory={"store": "postgresql"})
    data["models"][2]["base_url"] = "http://admin:s3cret@127.0.0.1:9"
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    for extra in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "gorkheavy", "doctor", "--config", str(path), "--timeout", "2", *extra],
            capture_output=True,
            text=True,
            env={**env(tmp_path), "GORKHEAVY_MEMORY_DSN": dsn},
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert "memory" in done.stdout
        assert "s3cret" not in done.stdout + done.stderr
        assert "***" in done.stdout


def test_an_unusable_redis_cache_is_a_clear_error(tmp_path: Path, standin: tuple[OllamaStandin, str]) -> None:
    _, url = standin
    config = write_config(tmp_path, url, cache={"enabled": True, "url": f"unix://{tmp_path}/no-redis.sock"})
    done = gorkheavy(tmp_path, "ask", "What is K3s?", "--config", str(config))
    assert done.returncode == 1
    assert "Error: cannot use the Redis answer cache at unix://" in done.stderr
    assert "check cache.url" in done.stderr
    assert "Traceback" not in done.stderr
