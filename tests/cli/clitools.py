"""Shared by the CLI tests: invoke the console script in-process, check its output."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from executus_worker import cli


def run(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli.main, args, env=env, input=stdin)


def ok_json(args: list[str], env: dict[str, str]) -> Any:
    result = run([*args, "--json"], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_clean_error(result: Result, code: int, text: str) -> None:
    """A failure is a message on stderr and an exit code, never a traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert text in result.stderr
    assert "Traceback" not in result.output
