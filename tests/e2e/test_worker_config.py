"""How a worker treats its own configuration: it refuses to start on a broken one."""

from __future__ import annotations

import subprocess

import pytest

from .harness import Cluster

pytestmark = pytest.mark.e2e


def test_a_worker_refuses_to_start_on_a_missing_agents_file(cluster: Cluster) -> None:
    worker = cluster.start("prefork", ready=False, EXECUTUS_AGENTS_FILE="/nonexistent/agents.toml")
    try:
        code = worker.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not refuse to start:\n{worker.text()[-2000:]}")
    assert code == 78
    text = worker.text()
    assert "refusing to start: EXECUTUS_AGENTS_FILE=/nonexistent/agents.toml" in text
    assert " ready." not in text
