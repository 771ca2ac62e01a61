"""`dev` is quieter without a terminal: no Celery banner, no colour codes."""

from __future__ import annotations

from executus_worker.cli.dev import DEV_WORKER_ARGS, quieter
from executus_worker.cli.processes import beat_argv, worker_argv
from executus_worker.settings import Settings


def test_without_a_tty_celery_gets_quiet_and_no_color_before_the_subcommand() -> None:
    argv = quieter(worker_argv(Settings(), pool="threads", extra=DEV_WORKER_ARGS), tty=False)
    sub = argv.index("worker")
    assert {"--quiet", "--no-color"} <= set(argv[:sub])
    assert argv[sub - 4 : sub - 2] == ["-A", "executus_worker.worker"]
    assert argv[-2:] == list(DEV_WORKER_ARGS)
    beat = quieter(beat_argv(), tty=False)
    assert beat.index("--quiet") < beat.index("beat")


def test_on_a_terminal_the_command_line_is_unchanged() -> None:
    argv = beat_argv()
    assert quieter(argv, tty=True) == argv
