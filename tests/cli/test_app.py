"""The command table: every command resolves to its module, a broken one is reported."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from executus_worker.cli import app, main


@pytest.mark.parametrize("name", sorted(app.COMMANDS))
def test_every_command_in_the_table_loads(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert not (command.help or "").startswith("(unavailable")


def test_a_command_whose_module_fails_to_import_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.COMMANDS, "broken", "no_such_module")
    result = CliRunner().invoke(main, ["broken"])
    assert result.exit_code == 1
    assert "`broken` is not available in this build" in result.output
    assert "Traceback" not in result.output
    assert "broken" in CliRunner().invoke(main, ["--help"]).output
