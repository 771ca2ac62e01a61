"""``executus-worker check``: the command (``command``), Redis (``store``), the deployment
(``fleet``)."""

from executus_worker.cli.check.command import check, run_checks

__all__ = ["check", "run_checks"]
