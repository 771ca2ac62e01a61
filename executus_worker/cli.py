"""The ``executus-worker`` console script.

Settings are built from the environment when a command starts (never at import) and URLs are
printed only through ``redact_url``. Expected failures -- bad input, an unknown run, Redis
unreachable -- end with a one-line message and a non-zero exit, never a traceback: exit 1 for
errors, 2 for usage errors (click's convention), 124 when ``enqueue --wait`` times out.
"""

from __future__ import annotations

import importlib
import sys

import click

from executus_worker import __version__
from executus_worker.cli_celery import POOLS, beat_argv, exec_celery, worker_argv
from executus_worker.cli_check import run_checks
from executus_worker.cli_common import ErrorsAsMessages, json_option, load_settings
from executus_worker.cli_dev import run_dev
from executus_worker.cli_output import emit_json
from executus_worker.cli_runs import cancel, enqueue, runs, status
from executus_worker.demo import run_demo
from executus_worker.schema import run_request_schema_json

# Subcommands whose code lives in other packages, imported only when used: a broken or slow
# import there must not take down `status` or `worker`.
LAZY_COMMANDS = {"schedules": ("executus_worker.schedules.cli", "schedules")}


class ExecutusGroup(ErrorsAsMessages):
    """The top-level group: expected errors as messages, plus lazily imported subcommands."""

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


# -- operations (the run commands live in cli_runs.py) -----------------------------


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
    """Interrupt two demo runs mid-flight, show their checkpoints, resume them exactly.

    Part 1 runs the kernel in-process; part 2 does it again with real worker processes.
    """
    sys.exit(run_demo(redis_url, sys.stdout, workers=True))


@main.command()
def schema() -> None:
    """Print the RunRequest JSON Schema (the contract for producers in other languages)."""
    click.echo(run_request_schema_json())


for command in (enqueue, status, runs, cancel):
    main.add_command(command)


if __name__ == "__main__":
    main()
