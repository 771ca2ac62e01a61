"""bench/capacity_bench.py's verdicts and cost model (the load itself runs in the smoke test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from executus_worker.settings import Settings

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    # The script imports the writer as the top-level `results`, as it does when run.
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("capacity_bench", BENCH / "capacity_bench.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


capacity = _load()


def level(**overrides: object) -> object:
    fields: dict[str, object] = {
        "runs": 1_000, "build_s": 1.0, "renew": [0.002] * 100, "save": [0.002] * 100,
        "lag": [0.001] * 100, "probe": [0.002] * 10, "done": 100, "due": 100,
        "bad_renewals": 0, "errors": 0, "client_cpu": 0.1, "redis_cpu": 0.2, "redis_cpu_max": 0.2,
        "commands_per_s": 2_000.0, "evalsha_us": 20.0, "box_cpu": 0.5, "memory_per_run": 4096.0,
    }  # fmt: skip
    fields.update(overrides)
    return capacity.Level(**fields)


def test_the_threshold_is_a_tenth_of_the_margin_and_half_the_renewal_timeout() -> None:
    defaults = Settings.model_construct()
    assert capacity.threshold_s(defaults, 0.1) == 1.0  # margin 10 s, renewal timeout 2 s
    short = Settings.model_construct(lease_ttl_s=3.0)  # margin 1 s, timeout 0.3 s
    assert capacity.threshold_s(short, 0.1) == 0.1
    tight = Settings.model_construct(lease_ttl_s=30.0, renew_timeout_s=0.5)
    assert capacity.threshold_s(tight, 0.1) == 0.25


def test_verdicts() -> None:
    assert capacity.judge(level(), 1.0) == "ok"
    assert capacity.judge(level(renew=[0.002] * 98 + [2.0] * 2), 1.0).startswith("renewal p99")
    assert capacity.judge(level(redis_cpu=0.95, redis_cpu_max=0.95), 1.0) == "Redis saturated"
    behind = "generators behind schedule (client-bound)"
    assert capacity.judge(level(done=90), 1.0) == behind
    assert capacity.judge(level(lag=[0.001] * 98 + [5.0] * 2), 1.0) == behind
    assert capacity.judge(level(bad_renewals=1), 1.0).startswith("errors")


def test_the_cost_of_a_running_run() -> None:
    cal = capacity.Calibration(save_us=50.0, renew_us=30.0, renew_batched_us=5.0, idle=0.0)
    # A save every 5 s and a renewal every 10 s: 10 + 3 us of Redis CPU per second.
    assert abs(capacity.per_run_cpu(cal, 5.0, 30.0, 1) - 13e-6) < 1e-12
    assert abs(capacity.per_run_cpu(cal, 5.0, 30.0, 100) - 10.5e-6) < 1e-12
