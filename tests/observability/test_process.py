"""A worker without metrics never loads prometheus_client (a third of a second per start)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
from executus_worker.settings import Settings
from executus_worker.worker.factory import create_app
from executus_worker.cli import main  # the health probe's import path too
import executus_worker.cli.health
create_app(Settings())
print(sorted(m for m in sys.modules if m.split(".")[0] == "prometheus_client"))
"""


def test_building_the_worker_app_without_metrics_imports_no_prometheus_client() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTUS_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
