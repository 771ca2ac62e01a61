"""``executus-worker demo``: the whole story with real workers and beat, end to end."""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from executus_worker.cli.live import Display, display_for
from executus_worker.demo import run_story


@contextmanager
def plain(out: io.StringIO) -> Iterator[Callable[[Callable[[str], str]], object]]:
    @contextmanager
    def view(label: Callable[[str], str]) -> Iterator[Display]:
        with display_for(out, label=label, live=False) as display:
            yield display

    yield view


@pytest.mark.e2e
@pytest.mark.redis
def test_the_story_survives_a_deploy_and_a_crash_exactly_and_leaves_nothing_behind(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = set(redis_client.keys("*"))
    out = io.StringIO()
    with plain(out) as view:
        code = run_story(redis_url, view, lambda line: print(line, file=out), threading.Event())
    text = out.getvalue()
    assert code == 0, text

    # The faults were injected mid-run, and replacements took over.
    assert re.search(r"\*\* SIGTERM -> A pid \d+ \(a deploy\)", text)
    assert re.search(r"\*\* SIGKILL -> B pid \d+ \(a crash\)", text)
    assert re.search(r"A exited with code 0, [\d.]+s after SIGTERM; starting A2", text)
    # (The interrupted status may last less than one poll before the sweep re-queues it.)
    assert re.search(r"interrupted at step \d+, checkpoint kept|queued again for recovery", text)
    assert re.search(r"claimed by (A2|B2) \(\w+\)( child \d+)? \(epoch 2, attempt 2\)", text)
    # A run A had started was finished by another claim, from its checkpoint.
    assert re.search(r"epoch 1 A \(prefork\) child \d+: [^;]+; epoch 2 (A2|B2) ", text), text
    # The cron job fired once, through beat.
    assert re.search(r"beat fired 'every-minute' as run sched:every-minute:\S+", text)
    # The verdict: six runs, each exact, one owner at a time, checked from the step trace.
    assert text.count("transcript exact") == 6
    assert "All 6 runs completed with exact transcripts; no run was executed by two owners" in text
    # Every process stopped, no key left (the server is private, so SCAN sees everything).
    pids = [int(p) for p in re.findall(r"(?:stopped|killed) .*, pid (\d+)", text)]
    pids += [int(p) for p in re.findall(r"SIG(?:TERM|KILL) -> \w+ pid (\d+)", text)]
    assert len(pids) >= 5  # A, B (signalled), A2, B2, beat
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert set(redis_client.keys("*")) == before


@pytest.mark.e2e
@pytest.mark.redis
def test_ctrl_c_stops_everything_the_story_started(
    redis_url: str, redis_client: redis.Redis
) -> None:
    before = set(redis_client.keys("*"))
    out = io.StringIO()
    stop = threading.Event()
    timer = threading.Timer(4.0, stop.set)  # what the SIGINT handler does
    timer.start()
    try:
        with plain(out) as view:
            code = run_story(redis_url, view, lambda line: print(line, file=out), stop)
    finally:
        timer.cancel()
    text = out.getvalue()
    assert code == 130, text
    assert "Ctrl-C: stopping everything the demo started" in text
    started = re.search(r"worker A .* pid (\d+), worker B .* pid (\d+), beat pid (\d+)", text)
    assert started is not None
    for pid in map(int, started.groups()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert set(redis_client.keys("*")) == before
