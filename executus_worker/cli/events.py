"""``executus-worker events RUN_ID [--follow]``: a run's audit events, oldest first.

One line per event (UTC time, event, its data as key=value; a traceback indented below), or one
JSON object per line with ``--json`` (``jq``-friendly, also while following).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from executus_worker.checkpoint.events import RunEvent
from executus_worker.cli.common import make_client


def event_line(event: RunEvent) -> str:
    stamp = datetime.fromtimestamp(event.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    data = dict(event.data)
    traceback = data.pop("traceback", None)
    fields = " ".join(f"{key}={_value(value)}" for key, value in data.items())
    line = f"{stamp}  {event.event:<16} {fields}".rstrip()
    if isinstance(traceback, str) and traceback:
        line += "\n" + "\n".join(f"    {row}" for row in traceback.splitlines())
    return line


def _value(value: object) -> str:
    if isinstance(value, str) and value and " " not in value and '"' not in value:
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


@click.command()
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the run ends.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Stop following after S s.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
def events(run_id: str, follow: bool, timeout_s: float | None, as_json: bool) -> None:
    """Show a run's events: enqueued, claimed, steps, critic decisions, how it ended."""
    with make_client() as client:
        count = 0
        for event in client.events(run_id, follow=follow, timeout_s=timeout_s):
            count += 1
            if as_json:
                click.echo(event.model_dump_json())
            else:
                click.echo(event_line(event))
        if count == 0 and not as_json:
            click.echo(
                "(no events: they expire with the run, and are not written when "
                "EXECUTUS_AUDIT_STREAM=false)",
                err=True,
            )
