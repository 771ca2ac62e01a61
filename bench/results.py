"""The one writer of bench/RESULTS.md, shared by every bench script.

Each script measures, then calls ``write_section(title, body, machine, targets)``: its
``## title`` section is replaced (or appended if new) and every other section is left alone, so
one script can be rerun on its own. A section starts with the machine it ran on (CPU, cores,
the 1-minute load average at its start and end, Python, Redis, date, commit) and may carry the
issue-11 targets it measured, as a JSON comment; after every write the summary table at the top
of the file is rebuilt from those comments, so it always agrees with the sections below it.

Also: ``pct``, ``median``, ``med_range`` -- the formatting every table here uses.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLE = "# Benchmark results"
SUMMARY = "Summary"

# The targets of issue 11 (and the capacity question of issue 8), in the order the summary
# lists them: key -> (what, goal). A script reports a ``Target`` under one of these keys.
TARGETS: dict[str, tuple[str, str]] = {
    "step.aof_off": (
        "Per-step overhead, AOF off",
        "≤ 1.5x one PING in the same run, at every S",
    ),
    "step.aof_everysec": (
        "Per-step overhead, AOF everysec",
        "≤ 1.5x one PING in the same run, at every S",
    ),
    "dispatch.prefork": (
        "Dispatch throughput, prefork c=4",
        "≥ 0.8x plain Celery no-op tasks",
    ),
    "dispatch.solo": ("Dispatch throughput, solo pool", "≥ 0.6x plain Celery no-op tasks"),
    "dispatch.latency": (
        "Enqueue → first step, p50",
        "≤ 1.2x plain Celery enqueue → task start",
    ),
    "recovery.interrupted": (
        "Recovery of 100,000 interrupted runs",
        "found and re-published in < 5 s",
    ),
    "recovery.empty": (
        "Sweep that finds nothing",
        "cost independent of the number of healthy runs",
    ),
    "crash.resume": (
        "SIGKILL → first resumed step",
        "same node name, owner provably gone: at boot, no lease wait",
    ),
    "renewal.cost": (
        "Renewal cost",
        "one pipelined round trip per process per interval; commands/s per 1,000 runs",
    ),
    "capacity.runs": (
        "Running runs one Redis carries (issue 8)",
        "renewal p99 within its budget of the lease margin",
    ),
    "capacity.cluster_runs": (
        "Running runs a 3-master Redis Cluster carries (issue 8)",
        "the busiest master's share of the work; the one-Redis rule divided by it",
    ),
}


# The sections in reading order (the summary's order); a section not named here goes last.
ORDER = (
    "Per-step overhead",
    "Checkpoint",
    "Audit",
    "Renewal cost",
    "Dispatch",
    "Recovery",
    "Crash to resumed step",
    "Broker publish",
    "HTTP API",
    "Capacity",
    "Capacity on Redis Cluster",
)


@dataclass
class Target:
    """One issue target as measured: ``met`` is None for a figure without a pass/fail goal."""

    key: str
    value: str
    met: bool | None

    def __post_init__(self) -> None:
        if self.key not in TARGETS:
            raise ValueError(f"unknown target {self.key!r}; add it to results.TARGETS")


# --------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def redis_server_version() -> str:
    """The version of the redis-server on PATH (what the scripts' private servers run)."""
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return next((v.split("=", 1)[1] for v in out if v.startswith("v=")), "?")


def git_commit() -> str:
    """The short commit of the checkout the bench runs from, ``-dirty`` with local edits."""
    here = str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        if head.returncode != 0:
            return "?"
        # Edits anywhere in the checkout, except this file's output (written while a
        # `make bench` runs, so it would mark every script after the first dirty).
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "--",
             ":/", ":(top,exclude)bench/RESULTS.md"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@dataclass
class Machine:
    """Where and when a script measured. ``capture()`` before measuring, ``finish()`` after:
    the load average at both ends says how much the figures between them can be trusted."""

    cpu: str
    cores: int
    python: str
    date: str
    commit: str
    load_start: float
    load_end: float | None = None
    redis: str = field(default_factory=redis_server_version)

    @classmethod
    def capture(cls) -> Machine:
        return cls(
            cpu=cpu_model(),
            cores=os.cpu_count() or 0,
            python=f"{platform.python_implementation()} {platform.python_version()}",
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            commit=git_commit(),
            load_start=os.getloadavg()[0],
        )

    def finish(self, *, redis_version: str | None = None) -> Machine:
        self.load_end = os.getloadavg()[0]
        if redis_version:
            self.redis = redis_version
        return self

    @property
    def load(self) -> str:
        end = "?" if self.load_end is None else f"{self.load_end:.1f}"
        return f"{self.load_start:.1f} → {end}"

    def describe(self) -> str:
        return (
            f"*Machine:* {self.cpu}, {self.cores} CPUs; 1-minute load average {self.load} "
            f"(start → end); {self.python}; Redis {self.redis}; {self.date}; "
            f"commit {self.commit}."
        )


# --------------------------------------------------------------------------- formatting


def pct(samples: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank, no interpolation) of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def med_range(values: Sequence[float], nd: int = 3, unit: str = "", scale: float = 1.0) -> str:
    """``median (min-max)`` of ``values`` times ``scale``, e.g. ``0.241 ms (0.230-0.262)``."""
    scaled = [v * scale for v in values]
    m, lo, hi = median(scaled), min(scaled), max(scaled)
    sep = " " if unit else ""
    return f"{m:,.{nd}f}{sep}{unit} ({lo:,.{nd}f}-{hi:,.{nd}f})"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


# --------------------------------------------------------------------------- the file

_TARGETS_TAG = re.compile(r"^<!-- bench-targets (?P<json>.*) -->$", re.M)
_SECTION = re.compile(r"^## (?P<title>.+?)\n(?P<body>.*?)(?=^## |\Z)", re.S | re.M)


def render_section(title: str, body: str, machine: Machine, targets: Sequence[Target] = ()) -> str:
    lines = [f"## {title}", "", machine.describe(), "", body.strip("\n"), ""]
    if targets:
        tag = {"load": machine.load, "commit": machine.commit, "targets": []}
        tag["targets"] = [asdict(t) for t in targets]
        lines += [f"<!-- bench-targets {json.dumps(tag, ensure_ascii=False)} -->", ""]
    return "\n".join(lines)


def replace_section(text: str, title: str, section: str) -> str:
    """``text`` with its ``## title`` section replaced by ``section`` (appended if absent)."""
    section = section.rstrip("\n") + "\n\n"
    for match in _SECTION.finditer(text):
        if match.group("title").strip() == title:
            return (text[: match.start()] + section + text[match.end() :]).rstrip("\n") + "\n"
    return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


def summary(text: str) -> str:
    """The summary section: every target, from the targets comments of the sections."""
    found: dict[str, tuple[str, dict[str, object], dict[str, str]]] = {}
    for match in _SECTION.finditer(text):
        title = match.group("title").strip()
        for tag in _TARGETS_TAG.finditer(match.group("body")):
            data = json.loads(tag.group("json"))
            for target in data["targets"]:
                found[target["key"]] = (title, target, data)
    rows = [
        f"## {SUMMARY}",
        "",
        "Each issue-11 target (and issue 8's capacity question), as last measured by `make "
        "bench` or the script named; ratios are of two figures taken in the same run. The "
        "load column is the box's 1-minute load average at the start and end of that script "
        "(2 cores: anything well above 1 means other work shared the box).",
        "",
        "| target | goal | measured | status | section (load, commit) |",
        "|---|---|---|---|---|",
    ]
    for key, (what, goal) in TARGETS.items():
        if key not in found:
            rows.append(f"| {what} | {goal} | -- | not measured | -- |")
            continue
        title, target, tag = found[key]
        met = target["met"]
        status = "n/a (a figure)" if met is None else ("**met**" if met else "**not met**")
        rows.append(
            f"| {what} | {goal} | {target['value']} | {status} | "
            f"{title} ({tag['load']}, {tag['commit']}) |"
        )
    return "\n".join(rows) + "\n"


def with_summary(text: str) -> str:
    """``text`` with its summary rebuilt and placed first, right under the title, and the
    sections in ``ORDER``."""
    sections = {
        m.group("title").strip(): m.group(0).strip("\n")
        for m in _SECTION.finditer(text)
        if m.group("title").strip() != SUMMARY
    }
    rank = {title: i for i, title in enumerate(ORDER)}
    titles = sorted(sections, key=lambda t: rank.get(t, len(ORDER)))  # stable for the rest
    body = "\n\n".join(sections[t] for t in titles)
    return f"{TITLE}\n\n{summary(body)}\n{body}\n"


def write_section(
    title: str,
    body: str,
    machine: Machine,
    targets: Sequence[Target] = (),
    *,
    path: Path = RESULTS,
) -> str:
    """Replace (or append) the ``## title`` section of ``path`` and rebuild the summary.
    Returns the section as written."""
    section = render_section(title, body, machine, targets)
    text = path.read_text() if path.exists() else TITLE + "\n"
    path.write_text(with_summary(replace_section(text, title, section)))
    return section
