"""Log lines about a run carry run id, step, epoch and worker; JSON is one object per line."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from executus_worker.core.models import RunRequest
from executus_worker.core.stop import StopToken
from executus_worker.observability import logs
from executus_worker.settings import Settings
from executus_worker.worker.runtime import Runtime


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A handler as Celery sets one up, on the package's logger (pytest's handlers on the root
    logger stay untouched); removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s/%(processName)s] %(message)s"))
    logger = logging.getLogger("executus_worker")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream, logger
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_inside_a_run_carry_its_fields_and_every_line_names_the_worker(
    captured,
) -> None:
    stream, logger = captured
    logs.configure(logger, "json")
    log = logger.getChild("some_module")
    log.info("outside any run")
    with logs.run_context("r-1", epoch=3, attempt=2, agent="demo.counter"):
        logs.set_step(7)
        log.warning("inside %s", "the run")
    outside, inside = json_lines(stream)
    assert "run_id" not in outside and outside["worker"] == logs.worker_id()
    assert inside["msg"] == "inside the run" and inside["level"] == "WARNING"
    assert {k: inside[k] for k in ("run_id", "step", "epoch", "attempt", "agent")} == {
        "run_id": "r-1", "step": 7, "epoch": 3, "attempt": 2, "agent": "demo.counter",
    }  # fmt: skip


def test_a_traceback_stays_inside_its_one_json_line(captured) -> None:
    stream, logger = captured
    logs.configure(logger, "json")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.getChild("x").exception("it broke")
    (line,) = json_lines(stream)
    assert "ValueError: bad" in str(line["exc"])


def test_text_lines_keep_the_configured_format_and_append_the_run_fields(captured) -> None:
    stream, logger = captured
    logs.configure(logger, "text")
    logs.configure(logger, "text")  # idempotent: fields appended once
    with logs.run_context("r-2", epoch=1):
        logger.getChild("y").info("hello")
    assert stream.getvalue().strip() == "[INFO/MainProcess] hello [run=r-2 epoch=1]"


def test_explicit_extra_fields_win_over_the_context(captured) -> None:
    stream, logger = captured
    logs.configure(logger, "json")
    logger.getChild("hb").warning("renewal failed", extra={"run_id": "r-9", "epoch": 4})
    (line,) = json_lines(stream)
    assert (line["run_id"], line["epoch"]) == ("r-9", 4)


@pytest.mark.redis
def test_every_line_the_worker_logs_about_a_run_names_it(redis_url: str, captured) -> None:
    stream, logger = captured
    logs.configure(logger, "json")
    runtime = Runtime(
        Settings(redis_url=redis_url, key_prefix=f"log{uuid.uuid4().hex[:8]}"), drain=StopToken()
    )
    request = RunRequest(run_id="r-log", agent="demo.counter", input={"steps": 2})
    runtime.store().register(request, run_id="r-log", queue="executus", now=0)
    runtime.handle(["r-log", request.to_json()], {}, task_id=None)
    runtime.handle(["r-log", request.to_json()], {}, task_id=None)  # a duplicate
    about_run = [line for line in json_lines(stream) if "r-log" in str(line["msg"])]
    assert len(about_run) >= 3  # started, completed, duplicate ignored
    assert all(line.get("run_id") == "r-log" for line in about_run), about_run
    finished = next(line for line in about_run if "completed" in str(line["msg"]))
    assert (finished["epoch"], finished["step"]) == (1, 2)
