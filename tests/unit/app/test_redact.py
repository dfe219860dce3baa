"""One redaction function for every URL and DSN form; client texts lose backend URLs and file paths."""

from __future__ import annotations

import pytest
from gorkheavy.config import ConfigError, build
from gorkheavy.core.redact import for_clients, redact
from gorkheavy.core.roster import ModelSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgres://:s3cret@db/x", "postgres://:***@db/x"),
        ("postgresql://app:p@ss/w0rd@db/x", "postgresql://app:***@db/x"),  # '@' and '/' in the password
        (
            "postgresql://app@db/x?password=s3cret&sslmode=require",
            "postgresql://app@db/x?password=***&sslmode=require",
        ),
        (
            "postgresql://app@db/x?sslmode=require&PASSWORD=s3cret",
            "postgresql://app@db/x?sslmode=require&PASSWORD=***",
        ),
        ("postgresql://db/x?sslpassword=s3cret", "postgresql://db/x?sslpassword=***"),
        ("host=db port=5432 password=s3cret user=app", "host=db port=5432 password=*** user=app"),
        ("host=db password = 's3 cr\\'et' user=app", "host=db password=*** user=app"),
        ("dbname=x passwd=s3cret", "dbname=x passwd=***"),
        ("http://admin:s3cret@qwen:11434", "http://admin:***@qwen:11434"),
        ("https://qwen:11434/api?token=s3cret#x", "https://qwen:11434/api?token=***#x"),
        ("at http://qwen:11434 (refused)", "at http://qwen:11434 (refused)"),
        ("the password field is required", "the password field is required"),
        (
            "qwen (m at http://u:s3cret@qwen:11434): failed; judge (m at https://k:s3cret@j:1): failed",
            "qwen (m at http://u:***@qwen:11434): failed; judge (m at https://k:***@j:1): failed",
        ),
    ],
)
def test_redact_removes_the_secret_of_every_url_and_dsn_form(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert "s3" not in redact(text) or "s3" not in text


def test_client_texts_lose_backend_urls_paths_and_hosts() -> None:
    text = (
        "qwen (qwen2.5-coder:1.5b at http://u:s3cret@qwen:11434): connection failed (Cannot connect to "
        "host qwen:11434 ssl:default [Connection refused]); cannot write the SQLite memory at "
        "/var/lib/gorkheavy/memory.db"
    )
    shown = for_clients(text)
    assert "s3cret" not in shown
    assert "qwen:11434" not in shown
    assert "/var/lib" not in shown
    assert shown.startswith("qwen (qwen2.5-coder:1.5b at <backend>): connection failed")
    assert "memory at <path>" in shown


def test_model_labels_and_config_errors_never_show_a_password() -> None:
    spec = ModelSpec(name="qwen", model="m", base_url="http://u:s3cret@qwen:11434")
    assert spec.label == "qwen (m at http://u:***@qwen:11434)"
    entry = {"name": "j", "model": "m", "role": "judge", "base_url": "ftp://u:s3cret@j:1"}
    with pytest.raises(ConfigError) as caught:
        build({"models": [{"name": "e", "model": "m", "role": "expert"}, entry]})
    assert "s3cret" not in str(caught.value)
    assert "ftp://u:***@j:1" in str(caught.value)
