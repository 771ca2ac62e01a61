"""The top-level ``executus-worker`` group and the table of its commands.

Settings are built from the environment when a command starts (never at import) and URLs are
printed only through ``redact_url``. Expected failures -- bad input, an unknown run, Redis
unreachable -- end with a one-line message and a non-zero exit, never a traceback: exit 1 for
errors, 2 for usage errors (click's convention), 124 when ``enqueue --wait`` times out.

Each command lives in the module of its group and is imported only when it is used (or listed
by ``--help``): a broken or slow import there must not take down ``status`` or ``worker``, and
``executus-worker status`` does not pay for importing the worker stack.
"""

from __future__ import annotations

import importlib

import click

from executus_worker import __version__
from executus_worker.cli.common import ErrorsAsMessages

# command name -> module under executus_worker.cli defining it (as a function of the same name,
# dashes as underscores). Adding a command is one line here.
COMMANDS = {
    "agents": "agents",
    "api": "api",
    "beat": "processes",
    "cancel": "runs",
    "check": "check",
    "demo": "demo",
    "dev": "dev",
    "enqueue": "runs",
    "events": "events",
    "health": "health",
    "recover": "runs",
    "runs": "runs",
    "schedules": "schedules",
    "schema": "runs",
    "status": "runs",
    "worker": "processes",
}


class ExecutusGroup(ErrorsAsMessages):
    """The top-level group: expected errors as messages, commands imported when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module_name = f"executus_worker.cli.{COMMANDS[cmd_name]}"
            try:
                command = getattr(importlib.import_module(module_name), cmd_name.replace("-", "_"))
            except (ImportError, AttributeError) as exc:
                return _unavailable(cmd_name, exc)
            if isinstance(command, click.Command):
                return command
        return super().get_command(ctx, cmd_name)


def _unavailable(name: str, exc: Exception) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"`{name}` is not available in this build: {exc}")

    return click.Command(name, callback=fail, help=f"(unavailable: {exc})")


@click.group(cls=ExecutusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="executus-worker")
def main() -> None:
    """Durable LLM-agent runs on Celery + Redis (configure with EXECUTUS_* variables)."""
