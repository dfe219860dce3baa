"""The web page as a person uses it, in headless Chromium against ``gorkheavy serve`` and the Ollama stand-in.

Each test starts from the page as a fresh visitor or a signed-in one, uses its own session names, and puts
back any model it made slow or failing, so the tests do not depend on their order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.ollama import ModelBehavior
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import MODELS, TOKEN, Server

pytestmark = pytest.mark.browser

WAIT_S = 20.0


def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str, timeout: float = WAIT_S) -> Any:
    wait = WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    try:
        return wait.until(check)
    except TimeoutException:
        text = driver.execute_script("return document.body.innerText").strip()[:600]
        raise AssertionError(f"waited {timeout:g} s for {what}; the page says: {text!r}") from None


def css(driver: WebDriver | WebElement, selector: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def shoot(driver: WebDriver, where: Path) -> None:
    """A screenshot of the whole page (the window grows to the page's height for it)."""
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(size["height"], min(int(height) + 140, 4000)))
    driver.save_screenshot(str(where))
    driver.set_window_size(size["width"], size["height"])
    assert where.stat().st_size > 10_000  # a rendered page, not a blank


def severe_logs(driver: WebDriver) -> list[str]:
    """Errors in the browser console other than the expected 401 of a refused token."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "status of 401" not in entry["message"]
    ]


def open_fresh(driver: WebDriver, server: Server) -> None:
    """The page as a new visitor sees it: nothing in this tab's storage."""
    driver.get(server.url + "/ui/style.css")  # same origin, no script that could write storage meanwhile
    driver.execute_script("sessionStorage.clear(); localStorage.clear();")
    driver.get(server.url + "/")


def sign_in(driver: WebDriver, token: str) -> None:
    field = until(driver, lambda d: d.find_element(By.ID, "token"), "the token form")
    field.clear()
    field.send_keys(token, Keys.ENTER)


@pytest.fixture
def page(browser: WebDriver, server: Server) -> Iterator[WebDriver]:
    """Signed in with the right token, on the chat view, in a clean tab."""
    open_fresh(browser, server)
    sign_in(browser, TOKEN)
    until(browser, lambda d: d.find_element(By.ID, "question"), "the chat view")
    yield browser
    assert severe_logs(browser) == []
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded
    assert [url for url in loaded if not url.startswith(server.url + "/")] == []  # nothing from elsewhere


@contextlib.contextmanager
def model_set(server: Server, name: str, **changes: Any) -> Iterator[None]:
    """One model of the roster behaves as ``changes`` say for the duration of the block."""
    server.model(name, **changes)
    try:
        yield
    finally:
        server.model(name, failure="none", latency=0.05, reply=None, chunk_delay=0.0, failure_after_chunks=2)


def new_session(driver: WebDriver, name: str) -> None:
    field = driver.find_element(By.ID, "new-session")
    field.send_keys(name, Keys.ENTER)
    until(driver, lambda d: d.find_element(By.ID, "current-session").text == name, f"session {name}")


def ask(driver: WebDriver, question: str) -> WebElement:
    """Type a question, press Enter, return the turn once the ensemble has answered (or failed)."""
    before = len(css(driver, "article.turn"))
    box = driver.find_element(By.ID, "question")
    box.send_keys(question, Keys.ENTER)
    until(driver, lambda d: len(css(d, "article.turn")) == before + 1, "the new turn")
    turn = css(driver, "article.turn")[-1]
    until(driver, lambda d: turn.get_attribute("data-state") in ("done", "failed"), "the answer")
    return turn


def memory_questions(driver: WebDriver) -> list[str]:
    until(driver, lambda d: css(d, "#memory ol, #memory-empty"), "the memory panel")
    return [e.text.removeprefix("Q:").strip() for e in css(driver, "#memory li.exchange > div:first-child")]


def test_a_wrong_token_is_refused_and_the_right_one_is_asked_once(
    browser: WebDriver, server: Server, shots: Path
) -> None:
    open_fresh(browser, server)
    sign_in(browser, "not-the-token")
    refusal = until(browser, lambda d: d.find_element(By.ID, "login-error"), "the refusal")
    assert "refused" in refusal.text
    assert css(browser, "#question") == []  # no chat without the token
    shoot(browser, shots / "token-refused.png")

    sign_in(browser, TOKEN)
    until(browser, lambda d: d.find_element(By.ID, "question"), "the chat view")
    browser.refresh()  # asked once: this tab keeps it
    until(browser, lambda d: d.find_element(By.ID, "question"), "the chat view after a reload")
    assert css(browser, "#token") == []

    assert TOKEN not in browser.current_url
    assert not any(TOKEN in line for line in server.log)  # never written to the server's log
    assert browser.execute_script("return document.cookie") == ""


def test_an_answer_streams_in_with_each_model_and_why_it_won(
    page: WebDriver, server: Server, shots: Path
) -> None:
    new_session(page, "stream-demo")
    with model_set(server, "llama", latency=2.0):  # one slow expert: the others finish first, visibly
        page.find_element(By.ID, "question").send_keys("What is K3s?", Keys.ENTER)
        turn = until(page, lambda d: css(d, "article.turn"), "the turn")[-1]
        until(page, lambda d: css(turn, '.chip[data-model="qwen"][data-status="ok"]'), "qwen finishing")
        # mid-stream: qwen has answered, llama still works, no answer decided yet
        assert turn.get_attribute("data-state") == "running"
        assert css(turn, '.chip[data-model="llama"][data-status="start"]')
        assert css(turn, "[data-answer]") == []
        until(page, lambda d: turn.get_attribute("data-state") == "done", "the answer")

    answer = turn.find_element(By.CSS_SELECTOR, "[data-answer]").text
    assert "What is K3s?" in answer  # the stand-in's answers quote the question
    turn.find_element(By.CSS_SELECTOR, "details.why summary").click()
    rows = {r.get_attribute("data-candidate"): r for r in css(turn, "tr[data-candidate]")}
    assert set(rows) == {"qwen-small", "qwen", "llama"}
    assert rows["qwen"].find_elements(By.TAG_NAME, "td")[1].text == "qwen2.5-coder:1.5b"
    assert all(r.get_attribute("data-outcome") == "ok" for r in rows.values())
    assert float(rows["llama"].find_elements(By.TAG_NAME, "td")[3].text.split()[0]) >= 2.0
    winner = turn.find_element(By.CSS_SELECTOR, '[data-fact="winner"]').text
    assert "chosen" in rows[winner].get_attribute("class")
    assert turn.find_element(By.CSS_SELECTOR, '[data-fact="verdict"]').text.startswith("the judge's verdict")
    assert turn.find_element(By.CSS_SELECTOR, '[data-fact="fallback"]').text == "no"
    assert turn.find_element(By.CSS_SELECTOR, '[data-fact="reason"]').text
    assert "What is K3s?" in turn.find_element(By.CSS_SELECTOR, '[data-fact="optimized"]').text
    shoot(page, shots / "chat.png")


SYNTHESIS = "The judge writes this answer word by word so the page can show it while it is written."


def test_the_synthesis_streams_in_as_the_judge_writes_it(
    page: WebDriver, server: Server, shots: Path
) -> None:
    new_session(page, "synthesis-demo")
    Select(page.find_element(By.ID, "strategy")).select_by_visible_text("synthesize")
    with model_set(server, "judge", reply=SYNTHESIS, chunk_delay=0.12):  # about 2 s for its 17 words
        page.find_element(By.ID, "question").send_keys("Stream the synthesis", Keys.ENTER)
        turn = until(page, lambda d: css(d, "article.turn"), "the turn")[-1]
        partial = until(
            page,
            lambda d: [e for e in css(turn, "[data-answer][data-partial]") if len(e.text.split()) >= 3],
            "the first words of the synthesis",
        )[0]
        # part of the answer is on screen while the judge still writes it
        seen = partial.text
        assert turn.get_attribute("data-state") == "running"
        assert SYNTHESIS.startswith(seen)
        assert seen != SYNTHESIS
        assert partial.get_attribute("aria-busy") == "true"
        assert "writing the answer" in turn.find_element(By.CSS_SELECTOR, "[data-partial-note]").text
        shoot(page, shots / "chat-streaming.png")
        until(page, lambda d: turn.get_attribute("data-state") == "done", "the answer")
    assert turn.find_element(By.CSS_SELECTOR, "[data-answer]").text == SYNTHESIS
    assert css(turn, "[data-partial], [data-partial-note], [data-replaced]") == []
    assert "synthesized" in turn.text

    # the synthesis breaks off after a few words: the fallback's answer replaces it, said so
    broken = {"failure": "mid_stream_error", "failure_after_chunks": 8}
    with model_set(server, "judge", reply=SYNTHESIS, chunk_delay=0.12, **broken):
        page.find_element(By.ID, "question").send_keys("Break off midway", Keys.ENTER)
        until(page, lambda d: len(css(d, "article.turn")) == 2, "the second turn")
        turn = css(page, "article.turn")[-1]
        until(page, lambda d: css(turn, "[data-answer][data-partial]"), "the start of the synthesis")
        until(page, lambda d: turn.get_attribute("data-state") == "done", "the fallback's answer")
    winner = turn.find_element(By.CSS_SELECTOR, '[data-fact="winner"]').get_attribute("textContent")
    assert winner in ("qwen-small", "qwen", "llama")
    answer = turn.find_element(By.CSS_SELECTOR, "[data-answer]").text
    assert answer.startswith(MODELS[winner])  # the expert's own answer
    assert "The judge writes" not in answer
    assert css(turn, ".badge.fallback")
    assert "broke off" in turn.find_element(By.CSS_SELECTOR, "[data-replaced]").text


def test_a_failing_expert_is_marked_and_counted(page: WebDriver, server: Server, shots: Path) -> None:
    new_session(page, "failure-demo")
    with model_set(server, "llama", failure="http_500"):
        turn = ask(page, "Which expert fails?")
    assert turn.get_attribute("data-state") == "done"  # the others still answer
    assert css(turn, '.chip.error[data-model="llama"]')
    turn.find_element(By.CSS_SELECTOR, "details.why summary").click()
    row = turn.find_element(By.CSS_SELECTOR, 'tr[data-candidate="llama"]')
    assert row.get_attribute("data-outcome") == "error: http_status"
    assert "failed" in row.get_attribute("class")
    assert "HTTP 500" in row.text
    assert turn.find_element(By.CSS_SELECTOR, '[data-fact="winner"]').text != "llama"
    shoot(page, shots / "expert-failed.png")

    with model_set(server, "qwen", reply="long " * 3000):  # past the expert's 1024-token cap
        turn = ask(page, "Say a lot")
    turn.find_element(By.CSS_SELECTOR, "details.why summary").click()
    row = turn.find_element(By.CSS_SELECTOR, 'tr[data-candidate="qwen"]')
    assert row.get_attribute("data-outcome") == "cut for length"  # kept, flagged, still a candidate
    assert "long long" in row.text
    assert "size limit" in row.text
    assert "cut" in turn.find_element(By.CSS_SELECTOR, '.chip[data-model="qwen"]').text

    page.find_element(By.ID, "tab-models").click()
    llama = until(page, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-backend="llama"]'), "the models")
    rate = llama.find_element(By.CSS_SELECTOR, "[data-error-rate]").get_attribute("data-error-rate")
    assert float(rate) > 0
    assert "http_status" in llama.text


def test_the_strategy_is_chosen_per_question_and_a_total_failure_says_why(
    page: WebDriver, server: Server
) -> None:
    new_session(page, "strategy-demo")
    Select(page.find_element(By.ID, "strategy")).select_by_visible_text("synthesize")
    turn = ask(page, "Combine the answers")
    turn.find_element(By.CSS_SELECTOR, "details.why summary").click()
    assert turn.find_element(By.CSS_SELECTOR, '[data-fact="verdict"]').text.startswith("the judge wrote")
    assert turn.find_element(By.CSS_SELECTOR, '[data-fact="winner"]').text == "judge"

    with (
        model_set(server, "qwen", failure="http_500"),
        model_set(server, "qwen-small", failure="http_500"),
        model_set(server, "llama", failure="http_500"),
    ):
        turn = ask(page, "Nobody can answer this")
    assert turn.get_attribute("data-state") == "failed"
    assert "no expert produced an answer" in turn.find_element(By.CSS_SELECTOR, ".notice").text
    outcomes = {
        r.get_attribute("data-candidate"): r.get_attribute("data-outcome")
        for r in css(turn, "tr[data-candidate]")
    }
    assert outcomes == dict.fromkeys(("qwen-small", "qwen", "llama"), "error: http_status")
    until(
        page, lambda d: memory_questions(d) == ["Combine the answers"], "the memory, unchanged by the failure"
    )


def test_sessions_keep_their_memory_apart(page: WebDriver, server: Server, shots: Path) -> None:
    new_session(page, "alice")
    ask(page, "My name is Alice and I like tea")
    new_session(page, "bob")
    assert memory_questions(page) == []
    server.standin.clear_requests()
    ask(page, "What do I like to drink?")
    until(page, lambda d: memory_questions(d) == ["What do I like to drink?"], "bob's memory")
    sent = [str(r.body) for r in server.chats("qwen")]
    assert sent
    assert not any("Alice" in body for body in sent)  # no model saw alice's turn in bob's request

    page.find_element(By.CSS_SELECTOR, 'button.session[data-session="alice"]').click()
    until(page, lambda d: memory_questions(d) == ["My name is Alice and I like tea"], "alice's memory")
    assert len(css(page, "article.turn")) == 1  # only alice's turn on screen
    server.standin.clear_requests()
    ask(page, "And what is my name?")
    sent = [str(r.body) for r in server.chats("qwen")]
    assert any("My name is Alice" in body for body in sent)  # her own history reached the experts
    assert not any("drink" in body for body in sent)
    shoot(page, shots / "sessions.png")


def test_models_and_performance_views_show_live_figures(page: WebDriver, server: Server, shots: Path) -> None:
    new_session(page, "perf-demo")
    ask(page, "Warm up the models")
    page.find_element(By.ID, "tab-models").click()
    until(page, lambda d: len(css(d, "tr[data-backend]")) == 5, "every backend")
    rows = {r.get_attribute("data-backend"): r for r in css(page, "tr[data-backend]")}
    assert all(r.get_attribute("data-health") == "ok" for r in rows.values())
    assert rows["judge"].find_element(By.CSS_SELECTOR, "[data-loaded]").text == "yes"
    shoot(page, shots / "models.png")

    server.standin.remove_model("llama3.2:1b")  # as if deleted on its server: the next poll says so
    try:
        until(
            page,
            lambda d: (
                d.find_element(By.CSS_SELECTOR, 'tr[data-backend="llama"]').get_attribute("data-health")
                == "problem"
            ),
            "llama's problem",
            timeout=10,
        )
        assert (
            "ollama pull llama3.2:1b" in page.find_element(By.CSS_SELECTOR, 'tr[data-backend="llama"]').text
        )
    finally:
        server.standin.add_model("llama3.2:1b", ModelBehavior(latency=0.05))

    page.find_element(By.ID, "tab-performance").click()
    until(page, lambda d: css(d, '#stage-table tr[data-stage="total"]'), "the stage table")
    stages = {r.get_attribute("data-stage") for r in css(page, "#stage-table tr[data-stage]")}
    assert {"experts", "judge", "total"} <= stages
    assert css(page, "#winner-table tr[data-winner]")
    drawn = page.execute_script(
        "const c = document.getElementById('stage-chart');"
        "return c.width > 0 && window.Chart.getChart(c) !== undefined"
    )
    assert drawn
    shoot(page, shots / "performance.png")

    page.find_element(By.ID, "tab-chat").click()  # the conversation is still there
    assert css(page, "article.turn")


def test_on_a_phone_with_the_keyboard_only(page: WebDriver, server: Server, shots: Path) -> None:
    page.set_window_size(390, 844)
    try:
        page.refresh()
        until(page, lambda d: d.find_element(By.ID, "question"), "the chat view")

        def overflow(d: WebDriver) -> int:
            return int(d.execute_script("return document.documentElement.scrollWidth - window.innerWidth"))

        def tab_to(element_id: str, *, back: bool = False, limit: int = 60) -> None:
            for _ in range(limit):
                if page.execute_script("return document.activeElement.id") == element_id:
                    return
                page.switch_to.active_element.send_keys(Keys.SHIFT + Keys.TAB if back else Keys.TAB)
            raise AssertionError(f"Tab never reached #{element_id}")

        assert overflow(page) <= 0
        page.find_element(By.TAG_NAME, "body").click()  # start from the top of the page, as a visitor does
        tab_to("new-session")
        page.switch_to.active_element.send_keys("phone", Keys.ENTER)
        until(page, lambda d: d.find_element(By.ID, "current-session").text == "phone", "the new session")
        tab_to("question")
        page.switch_to.active_element.send_keys("Typed without a mouse", Keys.ENTER)
        turn = until(page, lambda d: css(d, 'article.turn[data-state="done"]'), "the answer")[-1]
        summary = turn.find_element(By.CSS_SELECTOR, "details.why summary")
        for _ in range(40):
            if page.switch_to.active_element == summary:
                break
            page.switch_to.active_element.send_keys(Keys.TAB)
        assert page.switch_to.active_element == summary, "Tab never reached 'Why this answer'"
        summary.send_keys(Keys.ENTER)
        assert turn.find_element(By.CSS_SELECTOR, "details.why").get_attribute("open") is not None
        assert overflow(page) <= 0  # the wide candidates table scrolls inside its box
        outline = page.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")  # a visible focus ring
        shoot(page, shots / "phone-chat.png")

        tab_to("tab-chat", back=True)  # the tabs are one stop; the arrow keys move between them
        page.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
        assert page.execute_script("return document.activeElement.id") == "tab-models"
        until(page, lambda d: len(css(d, "tr[data-backend]")) == 5, "the models view")
        assert overflow(page) <= 0
        shoot(page, shots / "phone-models.png")
    finally:
        page.set_window_size(1280, 1000)
