"""A real ``gorkheavy serve`` on the Ollama stand-in, and Debian's headless Chromium driven by Selenium.

The server runs as its own process (the command a person runs), with a bearer token configured and SQLite
memory; the stand-in runs in a thread of the test process so a test can make one model slow or failing.
Screenshots go to ``app/screenshots/`` (``GORKHEAVY_SCREENSHOTS`` moves them), which git ignores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.integration.app.conftest import MODELS, roster

ROOT = Path(__file__).parents[3]
TOKEN = "web-test-token-7f3a9c"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@dataclass
class Server:
    url: str
    standin: OllamaStandin
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def model(self, name: str, **changes: Any) -> None:
        """Change the live behaviour of the model behind roster name ``name``."""
        self.standin.configure(MODELS[name], **changes)

    def chats(self, name: str) -> list[Any]:
        return self.standin.requests_for(path="/api/chat", model=MODELS[name])


def _drain(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("web")
    standin = OllamaStandin({model: ModelBehavior(latency=0.05) for model in MODELS.values()})
    with standin.serve_in_thread() as ollama_url:
        data = roster(
            ollama_url,
            # keep-alive comments every 0.2 s while nothing else is sent: the page reads streams full of them
            server={"host": "127.0.0.1", "port": 0, "heartbeat_seconds": 0.2},
            memory={"store": "sqlite", "path": str(tmp / "memory.db")},
            timeouts={"promptimizer": 10, "expert": 10, "judge": 10},
        )
        config = tmp / "config.yml"
        config.write_text(yaml.safe_dump(data))
        process = subprocess.Popen(
            [sys.executable, "-m", "gorkheavy", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, "GORKHEAVY_API_TOKEN": TOKEN, "XDG_STATE_HOME": str(tmp)},
        )
        try:
            assert process.stderr is not None
            first = process.stderr.readline()
            match = re.search(r"serving on (http://\S+)", first)
            assert match, first
            found = Server(match.group(1), standin, process, [first])
            threading.Thread(target=_drain, args=(process.stderr, found.log), daemon=True).start()
            yield found
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver: run scripts/system-deps.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--lang=en-US",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",  # a fresh profile: nothing left from an earlier run
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver is given, so Selenium never tries to download one
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def shots() -> Path:
    where = Path(os.environ.get("GORKHEAVY_SCREENSHOTS", ROOT / "app" / "screenshots"))
    where.mkdir(parents=True, exist_ok=True)
    return where
