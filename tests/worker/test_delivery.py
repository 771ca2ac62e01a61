"""What the worker shows of an executus.run delivery (inspect, events), and the run a revoke
names -- never the run's input."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from executus_worker.observability.logs import RunContextFilter
from executus_worker.publish import TASK_RUN
from executus_worker.settings import Settings
from executus_worker.worker.delivery import RunDelivery, run_and_agent
from executus_worker.worker.factory import create_app

SECRET = {"prompt": "my card number is 4111 1111 1111 1111"}
REQUEST = json.dumps({"run_id": "r1", "agent": "support.triage", "input": SECRET})


@pytest.fixture(scope="module")
def app() -> Celery:
    return create_app(Settings())


def delivery(app: Celery, args: list[Any], kwargs: dict[str, Any] | None = None) -> RunDelivery:
    """A request as the worker builds it from a raw send_task (its argsrepr holds the input)."""
    headers = {"id": "task-1", "task": TASK_RUN, "argsrepr": repr(args), "kwargsrepr": "{}"}
    message = SimpleNamespace(
        headers=headers, body=b"", payload=(args, kwargs or {}, {}), delivery_info={},
        properties={}, content_type="application/json", content_encoding="utf-8",
    )  # fmt: skip
    return RunDelivery(message, app=app, task=app.tasks[TASK_RUN], hostname="w1@host")


def test_inspect_shows_the_run_id_and_agent_only(app: Celery) -> None:
    request = delivery(app, ["r1", REQUEST])
    for safe in (False, True):
        shown = request.info(safe=safe)
        assert "4111" not in repr(shown)
    assert request.info()["args"] == ["r1", {"agent": "support.triage"}]
    assert request.info()["kwargs"] == {}
    assert request.info(safe=True)["args"] == "['r1', {'agent': 'support.triage'}]"
    # The task itself still gets the real arguments.
    assert request.args == ["r1", REQUEST]


def test_task_events_carry_the_run_id_and_agent_only(app: Celery) -> None:
    request = delivery(app, [], {"request": json.loads(REQUEST)})
    assert request.argsrepr == "['r1', {'agent': 'support.triage'}]"
    assert request.kwargsrepr == "{}"
    assert "4111" not in repr(request)


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (["r1", REQUEST], {}, ("r1", "support.triage")),
        ([REQUEST], {}, ("r1", "support.triage")),  # a lone request naming its run
        ([], {"run_id": "r2", "request": REQUEST}, ("r2", "support.triage")),
        (["r3", "not json"], {}, ("r3", "?")),
        (["bad id with spaces", {"agent": "a"}], {}, ("task-1", "a")),  # falls back to task id
        ([1, 2, 3], {}, ("task-1", "?")),
        (["r4", "[" * 100_000], {}, ("r4", "?")),  # deep nesting is not parsed into a crash
    ],
)
def test_the_run_a_message_names_is_read_without_ever_raising(
    args: list[Any], kwargs: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert run_and_agent(args, kwargs, "task-1") == expected


def test_celerys_received_line_names_the_run_in_its_structured_fields(app: Celery) -> None:
    """The MainProcess logs "Task executus.run[...] received" outside any run context, with the
    delivery's shown arguments as structured data: the log filter reads the run from them."""
    request = delivery(app, ["r1", REQUEST])
    context = {"id": request.id, "name": request.name, "args": request.argsrepr}
    record = logging.LogRecord("celery.worker.strategy", logging.INFO, __file__, 1,
                               "Task %(name)s[%(id)s] received", (context,), None)  # fmt: skip
    record.data = context
    RunContextFilter().filter(record)
    assert record.run_id == "r1"
    assert json.loads(json.dumps(context))["args"] == "['r1', {'agent': 'support.triage'}]"
