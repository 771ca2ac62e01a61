"""The run commands: ``enqueue``, ``status``, ``runs``, ``cancel``, ``recover``, ``schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from executus_worker.cli.agents import allow_unknown_agent_option
from executus_worker.cli.common import json_option, load_settings, make_client, stop_on_signals
from executus_worker.cli.output import (
    emit_json,
    progress_document,
    record_document,
    record_text,
    runs_table,
    transcript_text,
)
from executus_worker.cli.watch import queued_hint, wait_showing_progress, watch_runs
from executus_worker.client import Client, EnqueueResult, RunProgress, WaitTimeout
from executus_worker.client.progress import with_final_steps
from executus_worker.core.models import RunRecord, RunStatus
from executus_worker.schema import run_request_schema_json

EXIT_TIMEOUT = 124  # what coreutils `timeout` uses, so shell scripts can tell it apart


def _read_input(value: str) -> dict[str, Any]:
    """``--input`` is inline JSON, ``@path`` to a file, or ``@-`` for stdin."""
    if value.startswith("@"):
        source = value[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise click.UsageError(f"--input: cannot read {source}: {exc.strerror}") from None
    else:
        text = value
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise click.UsageError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"--input must be a JSON object, got {type(data).__name__}")
    return data


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--metadata expects KEY=VALUE, got {pair!r}")
        out[key] = val
    return out


@click.command()
@click.argument("agent")
@click.option("--input", "-i", "input_", default="{}", help="JSON object, @file or @- (stdin).")
@click.option(
    "--run-id",
    default=None,
    help="Idempotency key: the same id and request again sends nothing; a different request "
    "with it is an error.",
)
@click.option("--guild-id", default=None)
@click.option("--model-tier", default=None, help="Selects the tier's queue.")
@click.option("--metadata", "meta", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--max-iterations", type=click.IntRange(min=1), default=None)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Wait this long for the run to end, showing its progress on stderr.",
)
@allow_unknown_agent_option
@json_option
def enqueue(
    *,
    agent: str,
    input_: str,
    run_id: str | None,
    guild_id: str | None,
    model_tier: str | None,
    meta: tuple[str, ...],
    max_iterations: int | None,
    wait_s: float | None,
    allow_unknown_agent: bool,
    as_json: bool,
) -> None:
    """Validate, register and publish a run of AGENT; print its id on stdout.

    Refused if no live worker serves AGENT on the run's queue (see `agents`), unless
    --allow-unknown-agent. With --wait, exit 0 only if the run completed (1 otherwise, 124 on
    timeout).
    """
    payload: dict[str, Any] = {
        "agent": agent,
        "input": _read_input(input_),
        "run_id": run_id,
        "guild_id": guild_id,
        "model_tier": model_tier,
        "metadata": _metadata(meta),
    }
    if max_iterations is not None:
        payload["limits"] = {"max_iterations": max_iterations}
    with make_client() as client:
        result = client.submit(payload, allow_unknown_agent=allow_unknown_agent)
        document: dict[str, Any] = {
            "run_id": result.run_id,
            "created": result.created,
            "queue": result.queue,
            "status": result.record.status.value,
        }
        if not as_json:
            # The id alone on stdout (RUN=$(executus-worker enqueue ...)); the rest on stderr.
            click.echo(result.run_id)
            if result.created:
                click.echo(f"enqueued on {result.queue}", err=True)
            else:
                status = result.record.status.value
                click.echo(f"already exists ({status}); nothing sent", err=True)
        if wait_s is None:
            if as_json:
                emit_json(document)
            return
        sys.exit(_wait(client, result, wait_s, document, as_json=as_json))


def _wait(
    client: Client, result: EnqueueResult, wait_s: float, document: dict[str, Any], *,
    as_json: bool,
) -> int:  # fmt: skip
    """``enqueue --wait``: the exit code -- 0 completed, 1 ended otherwise, 124 timed out."""
    try:
        if as_json:
            record = client.wait(result.run_id, wait_s)
        else:
            record = wait_showing_progress(client, result.run_id, wait_s)
    except WaitTimeout as exc:
        document.update(status=exc.record.status.value, timed_out=True)
        if as_json:
            emit_json(document)
        elif exc.record.status is RunStatus.QUEUED:
            click.echo(f"Error: {queued_hint(result.run_id, wait_s, result.queue)}", err=True)
        else:
            click.echo(f"Error: {exc}", err=True)
        return EXIT_TIMEOUT
    if as_json:
        document.update(status=record.status.value, timed_out=False)
        document["record"] = record_document(record)
        emit_json(document)
    else:
        click.echo(record_text(record, _progress_of(client, record)))
    return 0 if record.status is RunStatus.COMPLETED else 1


@click.command()
@click.argument("run_id")
@click.option("--transcript", "-t", "show_transcript", is_flag=True, help="Include messages.")
@json_option
def status(run_id: str, show_transcript: bool, as_json: bool) -> None:
    """Show one run: status, step, phase, owner, epoch, attempts, lease left, error."""
    with make_client() as client:
        record = client.status(run_id)
        progress = _progress_of(client, record)
        messages = client.transcript(run_id) if show_transcript else None
    if as_json:
        document = record_document(record, messages)
        document["progress"] = progress_document(progress)
        emit_json(document)
        return
    click.echo(record_text(record, progress))
    if messages is not None:
        click.echo("")
        click.echo(transcript_text(messages))


def _progress_of(client: Client, record: RunRecord) -> RunProgress:
    found = with_final_steps(client.progress([record.run_id]), {}, client.transcript)
    return found[0] if found else RunProgress(record.run_id, record)


@click.command()
@click.option(
    "--status", "-s", "status_", type=click.Choice([s.value for s in RunStatus]), default=None
)
@click.option("--limit", "-n", type=click.IntRange(min=1, max=10_000), default=100)
@click.option("--watch", "-w", is_flag=True, help="A live table: step, phase, owner, lease.")
@click.option("--until-done", is_flag=True, help="With --watch: stop once every run has ended.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=0.5, show_default=True,
    metavar="SECONDS", help="With --watch: seconds between refreshes.",
)  # fmt: skip
@json_option
def runs(
    *,
    status_: str | None,
    limit: int,
    watch: bool,
    until_done: bool,
    interval: float,
    as_json: bool,
) -> None:
    """List recent runs, optionally of one status; --watch keeps the table live."""
    if watch and as_json:
        raise click.UsageError("--watch and --json do not go together")
    if until_done and not watch:
        raise click.UsageError("--until-done needs --watch")
    with make_client() as client:
        if watch:
            with stop_on_signals() as stop:
                watch_runs(
                    client, status=status_, limit=limit, interval_s=interval,
                    until_done=until_done, stop=stop,
                )  # fmt: skip
            return
        records = client.runs(status=status_, limit=limit)
    if as_json:
        emit_json([record_document(r) for r in records])
    else:
        click.echo(runs_table(records))


@click.command()
@click.argument("run_id")
@json_option
def cancel(run_id: str, as_json: bool) -> None:
    """Cancel a run: at once if it has not started, else at its next step boundary."""
    with make_client() as client:
        record = client.cancel(run_id)
    if as_json:
        emit_json(record_document(record))
    elif record.status.terminal:
        click.echo(f"{run_id} is {record.status.value}")
    else:
        click.echo(f"{run_id} is {record.status.value}: cancel requested, stops at its next step")


@click.command()
@json_option
def recover(as_json: bool) -> None:
    """Run one recovery sweep now: re-publish interrupted and orphaned runs."""
    # The worker stack (Celery included) is imported only by the command that needs it.
    from executus_worker.core.stop import StopToken  # noqa: PLC0415
    from executus_worker.worker.runtime import Runtime  # noqa: PLC0415

    report = Runtime(load_settings(), drain=StopToken()).recovery().sweep()
    if as_json:
        emit_json(report.as_dict())
    elif report.skipped_locked:
        click.echo("another sweep is running right now; it covers every run")
    else:
        click.echo(
            f"scanned {report.scanned}, requeued {report.requeued}, published "
            f"{report.published} in {report.elapsed_s:.3f}s"
            + (
                f"; {report.deferred} queued run(s) deferred: their queue has a backlog"
                if report.deferred
                else ""
            )
            + (f"; {len(report.errors)} bad record(s) skipped" if report.errors else "")
        )
    if report.publish_failed or report.errors:
        for run_id, what in report.errors[:10]:
            click.echo(f"  {run_id}: {what}", err=True)
        if report.publish_failed:
            click.echo(f"Error: {report.publish_failed} run(s) not published", err=True)
        sys.exit(1)


@click.command()
def schema() -> None:
    """Print the RunRequest JSON Schema (the contract for producers in other languages)."""
    click.echo(run_request_schema_json(load_settings()))
