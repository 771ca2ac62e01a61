"""``executus-worker check``: is this deployment fit to hold runs? (a doctor, as in redbeat).

Each check yields a finding: ``ok``, ``warn`` (works, but a run can be lost or slow) or
``fail`` (will not work; the command exits non-zero). Values of environment variables are
never printed -- they may carry passwords -- only their names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import click

from executus_worker.cli.check.findings import Finding
from executus_worker.cli.check.fleet import fleet_checks
from executus_worker.cli.check.store import amqp_check, celery_env_checks, redis_checks
from executus_worker.cli.common import load_settings
from executus_worker.cli.output import emit_json
from executus_worker.settings import Settings


def run_checks(settings: Settings, environ: Mapping[str, str] | None = None) -> list[Finding]:
    env = os.environ if environ is None else environ
    findings = list(celery_env_checks(settings, env))
    master = settings.sentinel_master
    findings += list(redis_checks("redis", settings.redis_url, settings, sentinel_master=master))
    if settings.broker_is_amqp:
        findings.append(amqp_check(settings.effective_broker_url))
    elif settings.effective_broker_url != settings.redis_url:
        broker_master = settings.effective_broker_sentinel_master
        findings += list(
            redis_checks(
                "broker", settings.effective_broker_url, None, sentinel_master=broker_master
            )
        )
    if any(f.level == "fail" and f.check in ("redis", "broker") for f in findings):
        return findings  # the rest would only repeat that Redis cannot be reached
    return findings + list(fleet_checks(settings))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The findings as one JSON list on stdout.")
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
def check(as_json: bool, strict: bool) -> None:
    """Doctor: is this deployment fit to hold runs? Exit 1 on failure.

    Checks Redis (and the broker): reachable, latency, eviction policy, persistence, Lua; the
    agents file loads; which workers are alive and what they consume; queue depth; run
    messages stranded on queues no worker reads; CELERY_* variables that override ours.
    """
    findings = run_checks(load_settings())
    if as_json:
        emit_json([f.as_dict() for f in findings])
    else:
        for finding in findings:
            click.echo(f"[{finding.level:<4}] {finding.check}: {finding.detail}")
    failing = {"fail", "warn"} if strict else {"fail"}
    if any(f.level in failing for f in findings):
        sys.exit(1)
