"""``executus-worker schedules``: add | rm | ls | validate | pause | resume.

Settings come from the click context object when the parent command put one there, else from
the environment (``EXECUTUS_*``) when the command runs -- never at import.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.cli.agents import allow_unknown_agent_option
from executus_worker.cli.common import ErrorsAsMessages, load_settings
from executus_worker.client import Client
from executus_worker.redis_connect import connect_state
from executus_worker.schedules.admin import JobView, ScheduleAdmin
from executus_worker.schedules.cron import Schedule
from executus_worker.schedules.model import JobSpec, OverlapPolicy
from executus_worker.schedules.source_toml import load_jobs_file, validation_problems
from executus_worker.schedules.store import ScheduleStore
from executus_worker.schedules.timing import format_fire
from executus_worker.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else load_settings()


@contextmanager
def _admin(ctx: click.Context) -> Iterator[ScheduleAdmin]:
    settings = _settings(ctx)
    client = connect_state(
        settings.redis_url,
        sentinel_master=settings.sentinel_master,
        socket_connect_timeout=5,
        socket_timeout=10,
    )
    try:
        yield ScheduleAdmin(
            ScheduleStore(client, key_prefix=settings.key_prefix),
            schedule_file=settings.schedule_file,
            runs=RedisStore(
                client, key_prefix=settings.key_prefix, shards=settings.effective_redis_shards
            ),
        )
    finally:
        client.close()


@click.group(cls=ErrorsAsMessages)
def schedules() -> None:
    """Scheduled jobs: from EXECUTUS_SCHEDULE_FILE and from Redis (changes apply live)."""


@schedules.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def list_jobs(ctx: click.Context, as_json: bool) -> None:
    """Every job with its next fire, last fire, last run and its status, and any error."""
    with _admin(ctx) as admin:
        views, file_error = admin.list()
    if as_json:
        document = {"jobs": [v.as_dict() for v in views], "file_error": file_error}
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    if file_error:
        click.echo(f"schedule file error (serving the last good jobs): {file_error}", err=True)
    click.echo(_table(views))


def _table(views: Sequence[JobView]) -> str:
    if not views:
        return "(no jobs)"
    header = (
        "JOB",
        "SOURCE",
        "STATE",
        "CRON",
        "TZ",
        "NEXT FIRE",
        "LAST FIRE",
        "LAST RUN",
        "STATUS",
    )
    rows = [header]
    for v in views:
        next_fire = f"{v.next_fire}*" if v.next_fire_pending else v.next_fire
        status = v.last_run_status or v.last_outcome
        rows.append(
            (v.name, v.source, v.state, v.cron, v.timezone, next_fire or "-",
             v.last_fire or "-", v.last_run_id or "-", status or "-")
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    errors = [f"  {v.name}: {v.error}" for v in views if v.error]
    if errors:
        lines += ["", "errors:", *errors]
    if any(v.next_fire_pending for v in views):
        lines += ["", "* not yet reserved by a running beat (computed now)"]
    return "\n".join(lines)


@schedules.command("add")
@click.argument("name")
@click.option("--cron", required=True, help='Five fields or an alias, e.g. "0 3 * * *".')
@click.option("--timezone", "tz", default="UTC", show_default=True, help="IANA name.")
@click.option("--agent", required=True)
@click.option("--input", "input_json", default="{}", help="The agent input as a JSON object.")
@click.option("--guild-id", default=None)
@click.option("--model-tier", default=None)
@click.option("--metadata", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--max-iterations", type=int, default=None)
@click.option("--overlap", type=click.Choice([p.value for p in OverlapPolicy]), default="skip")
@click.option("--catchup-window-s", type=float, default=None)
@click.option("--jitter-s", type=float, default=0.0, show_default=True)
@click.option("--disabled", is_flag=True, help="Store it without firing.")
@click.option("--description", default="")
@click.option("--replace", is_flag=True, help="Overwrite a Redis job of the same name.")
@allow_unknown_agent_option
@click.pass_context
def add(ctx: click.Context, /, name: str, **options: Any) -> None:
    """Add (or with --replace, change) a job stored in Redis.

    Refused if no live worker serves its agent (see `agents`), unless --allow-unknown-agent.
    """
    spec = _spec_from_options(name, options)
    settings = _settings(ctx)
    if settings.check_agents_on_enqueue and not options["allow_unknown_agent"]:
        with Client(settings) as client:
            client.require_agent(spec.run.agent, settings.queue_for(spec.run.model_tier))
    with _admin(ctx) as admin:
        admin.add(spec, replace=options["replace"])
        views, _ = admin.list()
    view = next(v for v in views if v.name == name and v.source == "redis")
    click.echo(f"added {name}: next fire {view.next_fire or '-'} (UTC)")


def _spec_from_options(name: str, options: dict[str, Any]) -> JobSpec:
    try:
        job_input = json.loads(options["input_json"])
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise click.UsageError(f"--input is not valid JSON: {exc}") from None
    metadata = {}
    for item in options["metadata"]:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    run: dict[str, Any] = {
        "agent": options["agent"],
        "input": job_input,
        "guild_id": options["guild_id"],
        "model_tier": options["model_tier"],
        "metadata": metadata,
    }
    if options["max_iterations"] is not None:
        run["limits"] = {"max_iterations": options["max_iterations"]}
    fields: dict[str, Any] = {
        "name": name,
        "cron": options["cron"],
        "timezone": options["tz"],
        "run": run,
        "enabled": not options["disabled"],
        "overlap": options["overlap"],
        "jitter_s": options["jitter_s"],
        "description": options["description"],
    }
    if options["catchup_window_s"] is not None:
        fields["catchup_window_s"] = options["catchup_window_s"]
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as exc:
        raise click.ClickException("; ".join(validation_problems(exc, where=name))) from None


@schedules.command("rm")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Remove a job stored in Redis (file jobs are removed by editing the file)."""
    with _admin(ctx) as admin:
        admin.remove(name)
    click.echo(f"removed {name}")


@schedules.command("pause")
@click.argument("name")
@click.pass_context
def pause(ctx: click.Context, name: str) -> None:
    """Stop firing a job (file or Redis) until resumed; missed fires never run."""
    with _admin(ctx) as admin:
        changed = admin.pause(name)
    click.echo(f"paused {name}" if changed else f"{name} was already paused")


@schedules.command("resume")
@click.argument("name")
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Fire a paused job again, from its next fire time on."""
    with _admin(ctx) as admin:
        changed = admin.resume(name)
    click.echo(f"resumed {name}" if changed else f"{name} was not paused")


@schedules.command("validate")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cron", default=None, help="Check one expression instead of a file.")
@click.option("--timezone", "tz", default="UTC", show_default=True)
@click.option("--count", default=3, show_default=True, help="Fires to show per job.")
@click.pass_context
def validate(ctx: click.Context, path: Path | None, cron: str | None, tz: str, count: int) -> None:
    """Check a schedule file (default: EXECUTUS_SCHEDULE_FILE) or one --cron; exit 1 on errors.

    Needs no Redis. Prints each job's next fires in UTC and in its own timezone.
    """
    now = datetime.now(UTC)
    if cron is not None:
        schedule = Schedule.parse(cron, tz)
        click.echo(f"ok  {cron} ({tz})")
        click.echo(_next_fires(schedule, now, count))
        return
    target = path or _settings(ctx).schedule_file
    if target is None:
        raise click.UsageError("give a PATH or set EXECUTUS_SCHEDULE_FILE (or use --cron)")
    result = load_jobs_file(target)
    if result.error is not None:
        raise click.ClickException(result.error)
    for spec in result.jobs:
        click.echo(f"ok     {spec.name}: {spec.cron} ({spec.timezone})")
        click.echo(_next_fires(spec.schedule(), now, count))
    for problem in result.problems:
        click.echo(f"error  {problem.name}: {problem.error}")
    if result.problems:
        raise click.exceptions.Exit(1)
    click.echo(f"{len(result.jobs)} job(s) valid in {target}")


def _next_fires(schedule: Schedule, now: datetime, count: int) -> str:
    return "\n".join(
        f"         {format_fire(t)}  ({t.astimezone(schedule.zone).isoformat()})"
        for t in itertools.islice(schedule.fires_after(now), count)
    )
