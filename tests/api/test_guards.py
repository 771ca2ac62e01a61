"""The guards, without a server: JSON nesting, loopback addresses, the refusal to serve an
open API beyond this machine, and how settings treat the token."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from executus_worker import cli
from executus_worker.api import check_bind, is_loopback
from executus_worker.core.jsoncap import json_too_deep
from executus_worker.errors import ConfigError
from executus_worker.settings import Settings

TOKEN = "a-token-long-enough-1234"


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'"[[[[[[["', 0),  # brackets inside a string do not count
        (b'["\\"[[[", []]', 2),  # nor after an escaped quote inside the string
        (b'["\\\\", [[]]]', 3),  # an escaped backslash ends before the closing quote
        (b'"unterminated [[[[[[', 0),
        (b"[" * 10 + b"]" * 10, 10),
        (b"]]]]][[", 2),  # malformed: the parser will say so, the counter must not crash
    ],
)
def test_json_depth_counts_brackets_outside_strings(body: bytes, depth: int) -> None:
    assert json_too_deep(body, depth) is None
    if depth:
        assert json_too_deep(body, depth - 1) is not None


def test_json_depth_names_the_offending_byte() -> None:
    assert json_too_deep(b'{"a": [[[1]]]}', 3) == 8


def test_json_depth_stays_linear_on_hostile_quotes() -> None:
    """Thousands of unterminated, escaped quotes: one pass, not one per quote."""
    body = b'"' + b'\\"' * 200_000
    assert json_too_deep(body, 4) is None
    assert json_too_deep(b"[" * 200_000, 64) == 64


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.internal", False),
    ],
)
def test_only_loopback_addresses_count_as_local(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_open_api_is_refused_beyond_loopback() -> None:
    check_bind(Settings(), "127.0.0.1")
    check_bind(Settings(api_token=TOKEN), "0.0.0.0")
    with pytest.raises(ConfigError, match="EXECUTUS_API_TOKEN"):
        check_bind(Settings(), "0.0.0.0")


def test_the_command_refuses_before_listening() -> None:
    env = {"EXECUTUS_API_HOST": "0.0.0.0", "EXECUTUS_API_TOKEN": ""}
    result = CliRunner().invoke(cli.main, ["api"], env=env)
    assert result.exit_code == 1
    assert "refusing to serve the API on '0.0.0.0' without a token" in result.stderr


def test_a_short_token_is_refused_without_echoing_it() -> None:
    result = CliRunner().invoke(cli.main, ["api"], env={"EXECUTUS_API_TOKEN": "hunter2"})
    assert result.exit_code == 1
    assert "EXECUTUS_API_TOKEN: Value error, must be at least 16 characters" in result.stderr
    assert "hunter2" not in result.output + result.stderr
    with pytest.raises(ValidationError) as caught:
        Settings(api_token="hunter2")
    assert "hunter2" not in str(caught.value)


def test_the_token_is_kept_out_of_reprs_and_dumps() -> None:
    settings = Settings(api_token=TOKEN)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.model_dump())
    assert Settings(api_token="  ").api_token is None  # compose's ${TOKEN:-}: unset


def test_the_compose_service_needs_its_token_and_the_image_has_the_extra() -> None:
    ops = Path(__file__).resolve().parents[2] / "ops"
    service = yaml.safe_load((ops / "compose.yaml").read_text())["services"]["api"]
    # What compose passes when EXECUTUS_API_TOKEN is unset: ${EXECUTUS_API_TOKEN:-} is "".
    env = {**service["environment"], "EXECUTUS_API_TOKEN": ""}
    result = CliRunner().invoke(cli.main, service["command"], env=env)
    assert result.exit_code == 1
    assert "without a token" in result.stderr
    assert "'.[api]'" in (ops / "Dockerfile").read_text()
