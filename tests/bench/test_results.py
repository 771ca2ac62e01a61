"""bench/results.py: the one writer of bench/RESULTS.md (sections, machine line, summary)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    # bench/ is not a package: the scripts import the writer as the top-level `results`.
    path = Path(__file__).resolve().parents[2] / "bench" / "results.py"
    spec = importlib.util.spec_from_file_location("bench_results", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


results = _load()


def machine() -> object:
    return results.Machine(
        cpu="Test CPU", cores=2, python="CPython 3.11", date="2026-12-01 10:00 UTC",
        commit="abc1234", load_start=0.5, load_end=1.5, redis="7.0.15",
    )  # fmt: skip


def test_a_section_is_replaced_in_place_and_the_others_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    results.write_section("Alpha", "alpha one", machine(), path=path)
    results.write_section("Beta", "beta one\n\n### sub\n\ntable", machine(), path=path)
    results.write_section("Alpha", "alpha two", machine(), path=path)
    text = path.read_text()
    assert text.startswith("# Benchmark results\n\n## Summary\n")
    assert "alpha one" not in text
    assert text.count("## Alpha") == 1 and text.count("## Beta") == 1
    # Replaced where it was: Alpha still comes before Beta, whose subsection survived.
    assert text.index("alpha two") < text.index("beta one") < text.index("### sub")
    assert "Test CPU, 2 CPUs; 1-minute load average 0.5 → 1.5" in text
    assert "Redis 7.0.15" in text and "commit abc1234" in text


def test_a_new_section_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Old\n\nold text\n")
    results.write_section("New", "new text", machine(), path=path)
    text = path.read_text()
    assert text.index("## Summary") < text.index("## Old") < text.index("## New")
    assert "old text" in text


def test_the_summary_lists_every_target_from_the_sections(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    met = results.Target("dispatch.prefork", "85% (850 vs 1,000 /s)", True)
    missed = results.Target("dispatch.latency", "1.46x", False)
    results.write_section("Dispatch", "body", machine(), [met, missed], path=path)
    figure = results.Target("renewal.cost", "410 commands/s", None)
    results.write_section("Renewal cost", "body", machine(), [figure], path=path)
    summary = path.read_text().split("## Dispatch")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(results.TARGETS)  # the header, then one row per target
    assert "| 85% (850 vs 1,000 /s) | **met** | Dispatch (0.5 → 1.5, abc1234) |" in summary
    assert "| 1.46x | **not met** |" in summary
    assert "| 410 commands/s | n/a (a figure) |" in summary
    assert summary.count("not measured") == len(results.TARGETS) - 3
    # Rewriting a section rewrites its rows: the summary never keeps a stale figure.
    results.write_section("Dispatch", "body", machine(), [], path=path)
    summary = path.read_text().split("## Dispatch")[0]
    assert "85%" not in summary and summary.count("not measured") == len(results.TARGETS) - 1


def test_unknown_target_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown target"):
        results.Target("dispatch.nonsense", "1", True)


def test_formatting_helpers() -> None:
    assert results.med_range([0.3, 0.1, 0.2], nd=1, unit="ms", scale=10) == "2.0 ms (1.0-3.0)"
    assert results.pct([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert results.pct([1.0, 2.0], 0.99) == 2.0
    with pytest.raises(ValueError):
        results.pct([], 0.5)


def test_the_machine_is_captured_from_this_box() -> None:
    captured = results.Machine.capture().finish(redis_version="9.9.9")
    assert captured.cores >= 1 and captured.load_end is not None
    assert "Redis 9.9.9" in captured.describe()


def test_sections_are_kept_in_reading_order(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    results.write_section("Other", "other", machine(), path=path)
    results.write_section("Capacity", "capacity", machine(), path=path)
    results.write_section("Per-step overhead", "steps", machine(), path=path)
    text = path.read_text()
    assert text.index("## Per-step overhead") < text.index("## Capacity") < text.index("## Other")
