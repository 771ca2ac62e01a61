"""The ``executus-worker`` console script.

Settings are built from the environment when a command starts (never at import) and URLs are
printed only through ``redact_url``. Expected failures -- bad input, an unknown run, Redis
unreachable -- end with a one-line message and a non-zero exit, never a traceback: exit 1 for
errors, 2 for usage errors (click's convention), 124 when ``enqueue --wait`` times out.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click
import redis
from pydantic import ValidationError

from executus_worker import __version__
from executus_worker.cli_celery import POOLS, beat_argv, exec_celery, worker_argv
from executus_worker.cli_check import run_checks
from executus_worker.cli_dev import run_dev
from executus_worker.cli_output import (
    emit_json,
    record_document,
    record_text,
    runs_table,
    transcript_text,
)
from executus_worker.client import Client, WaitTimeout
from executus_worker.core.models import RunStatus
from executus_worker.demo import run_demo
from executus_worker.errors import ExecutusError
from executus_worker.schema import run_request_schema_json
from executus_worker.settings import Settings

EXIT_TIMEOUT = 124  # what coreutils `timeout` uses, so shell scripts can tell it apart

# Subcommands whose code lives in other packages, imported only when used: a broken or slow
# import there must not take down `status` or `worker`.
LAZY_COMMANDS = {"schedules": ("executus_worker.schedules.cli", "schedules")}


class ExecutusGroup(click.Group):
    """Turns expected errors into ``Error: <message>`` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ExecutusError as exc:
            raise click.ClickException(str(exc)) from exc
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis: {exc}") from exc
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            if _is_broker_error(exc):
                raise click.ClickException(f"broker: {exc}") from exc
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module_name, attr = LAZY_COMMANDS[cmd_name]
            try:
                command = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                return _unavailable(cmd_name, exc)
            if isinstance(command, click.Command):
                return command
        return super().get_command(ctx, cmd_name)


def _unavailable(name: str, exc: Exception) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"`{name}` is not available in this build: {exc}")

    return click.Command(name, callback=fail, help=f"(unavailable: {exc})")


def _is_broker_error(exc: Exception) -> bool:
    # kombu is imported lazily (with celery) by the publisher; check by module, not import.
    return type(exc).__module__.startswith(("kombu.", "amqp."))


def load_settings() -> Settings:
    """Settings from the environment; a bad value is reported without echoing it (secrets)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"EXECUTUS_{str(err['loc'][0]).upper() if err['loc'] else '?'}: {err['msg']}"
            for err in exc.errors()
        )
        raise click.ClickException(f"invalid settings: {problems}") from None


def _client() -> Client:
    return Client(load_settings())


json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


@click.group(cls=ExecutusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="executus-worker")
def main() -> None:
    """Durable LLM-agent runs on Celery + Redis (configure with EXECUTUS_* variables)."""


# -- processes ---------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--pool", "-P", type=click.Choice(POOLS), default=None, help="Celery pool.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None)
@click.option("--queues", "-Q", default=None, help="Comma-separated; default: all our queues.")
@click.option("--hostname", "-n", default=None)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    *,
    pool: str | None,
    concurrency: int | None,
    queues: str | None,
    hostname: str | None,
    loglevel: str,
    celery_args: tuple[str, ...],
) -> None:
    """Exec into `celery -A executus_worker.worker worker` (extra args pass through)."""
    settings = load_settings()
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    exec_celery(worker_argv(
        settings, pool=pool, concurrency=concurrency, queues=queue_list,
        hostname=hostname, loglevel=loglevel, extra=celery_args,
    ))  # fmt: skip


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Exec into `celery beat` with the executus scheduler (cron jobs + recovery sweep)."""
    load_settings()  # fail here, readably, rather than inside Celery
    exec_celery(beat_argv(loglevel=loglevel, extra=celery_args))


@main.command()
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--no-beat", is_flag=True, help="Run the worker only.")
def dev(concurrency: int, loglevel: str, no_beat: bool) -> None:
    """Redis (configured, local or embedded) + one worker + beat; Ctrl-C stops all."""
    code = run_dev(
        load_settings(), concurrency=concurrency, loglevel=loglevel, with_beat=not no_beat
    )
    sys.exit(code)


# -- runs --------------------------------------------------------------------------------


def _read_input(value: str) -> dict[str, Any]:
    """``--input`` is inline JSON, ``@path`` to a file, or ``@-`` for stdin."""
    if value.startswith("@"):
        source = value[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {source}: {exc.strerror}") from None
    else:
        text = value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object")
    return data


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--meta")
        out[key] = val
    return out


@main.command()
@click.argument("agent")
@click.option("--input", "-i", "input_", default="{}", help="JSON object, @file or @- (stdin).")
@click.option("--run-id", default=None, help="Idempotency: an existing id sends nothing.")
@click.option("--guild-id", default=None)
@click.option("--model-tier", default=None, help="Selects the tier's queue.")
@click.option("--meta", multiple=True, help="KEY=VALUE metadata (repeatable).")
@click.option("--max-iterations", type=click.IntRange(min=1), default=None)
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS")
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
    as_json: bool,
) -> None:
    """Validate, register and publish a run of AGENT; print its id.

    With --wait, exit 0 only if the run completed (1 otherwise, 124 on timeout).
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
    with _client() as client:
        result = client.submit(payload)
        document: dict[str, Any] = {
            "run_id": result.run_id,
            "created": result.created,
            "queue": result.queue,
            "status": result.record.status.value,
        }
        if not as_json:
            if result.created:
                click.echo(f"enqueued {result.run_id} on {result.queue}")
            else:
                click.echo(
                    f"{result.run_id} already exists ({result.record.status.value}); nothing sent"
                )
        if wait_s is None:
            if as_json:
                emit_json(document)
            return
        try:
            record = client.wait(result.run_id, wait_s)
        except WaitTimeout as exc:
            document.update(status=exc.record.status.value, timed_out=True)
            if as_json:
                emit_json(document)
            else:
                click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_TIMEOUT)
        if as_json:
            document.update(status=record.status.value, timed_out=False)
            document["record"] = record_document(record)
            emit_json(document)
        else:
            click.echo(record_text(record))
        sys.exit(0 if record.status is RunStatus.COMPLETED else 1)


@main.command()
@click.argument("run_id")
@click.option("--transcript", "-t", "show_transcript", is_flag=True, help="Include messages.")
@json_option
def status(run_id: str, show_transcript: bool, as_json: bool) -> None:
    """Show one run's record (and transcript)."""
    with _client() as client:
        record = client.status(run_id)
        messages = client.transcript(run_id) if show_transcript else None
    if as_json:
        emit_json(record_document(record, messages))
        return
    click.echo(record_text(record))
    if messages is not None:
        click.echo("")
        click.echo(transcript_text(messages))


@main.command()
@click.option(
    "--status", "-s", "status_", type=click.Choice([s.value for s in RunStatus]), default=None
)
@click.option("--limit", "-n", type=click.IntRange(min=1, max=10_000), default=100)
@json_option
def runs(status_: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, optionally of one status."""
    with _client() as client:
        records = client.runs(status=status_, limit=limit)
    if as_json:
        emit_json([record_document(r) for r in records])
    else:
        click.echo(runs_table(records))


@main.command()
@click.argument("run_id")
@json_option
def cancel(run_id: str, as_json: bool) -> None:
    """Cancel a run: at once if it has not started, else at its next step boundary."""
    with _client() as client:
        record = client.cancel(run_id)
    if as_json:
        emit_json(record_document(record))
    elif record.status.terminal:
        click.echo(f"{run_id} is {record.status.value}")
    else:
        click.echo(f"{run_id} is {record.status.value}: cancel requested, stops at its next step")


# -- operations --------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
def check(as_json: bool, strict: bool) -> None:
    """Doctor: can this Redis hold runs safely? Exit 1 on failure."""
    findings = run_checks(load_settings())
    if as_json:
        emit_json([f.as_dict() for f in findings])
    else:
        for finding in findings:
            click.echo(f"[{finding.level:<4}] {finding.check}: {finding.detail}")
    failing = {"fail", "warn"} if strict else {"fail"}
    if any(f.level in failing for f in findings):
        sys.exit(1)


@main.command()
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
            + (f"; {len(report.errors)} bad record(s) skipped" if report.errors else "")
        )
    if report.publish_failed or report.errors:
        for run_id, what in report.errors[:10]:
            click.echo(f"  {run_id}: {what}", err=True)
        if report.publish_failed:
            click.echo(f"Error: {report.publish_failed} run(s) not published", err=True)
        sys.exit(1)


@main.command()
@click.option("--redis-url", default=None, help="Default: EXECUTUS_REDIS_URL, local, embedded.")
def demo(redis_url: str | None) -> None:
    """Interrupt two demo runs mid-flight, show their checkpoints, resume them exactly."""
    sys.exit(run_demo(redis_url, sys.stdout))


@main.command()
def schema() -> None:
    """Print the RunRequest JSON Schema (the contract for producers in other languages)."""
    click.echo(run_request_schema_json())


if __name__ == "__main__":
    main()
