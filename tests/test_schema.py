"""The published schema's x-executus block says exactly what the worker accepts."""

from __future__ import annotations

from executus_worker.core.models import RunRequest
from executus_worker.schema import run_request_schema
from executus_worker.settings import Settings
from executus_worker.worker.messages import parse_request, split_args


def test_the_contract_names_task_queue_and_argument_layout() -> None:
    contract = run_request_schema()["x-executus"]
    assert contract["task"] == "executus.run"
    assert contract["queue"] == "executus"  # not Celery's default `celery`
    assert contract["args"] == ["run_id", "request"]
    assert contract["kwargs"] == {}
    assert contract["task_id"].startswith("the run id")


def test_the_contract_is_this_deployments() -> None:
    settings = Settings(
        default_queue="agents", tier_queues={"fast": "agents-fast"}, max_payload_bytes=4096
    )
    contract = run_request_schema(settings)["x-executus"]
    assert contract["queue"] == "agents"
    assert contract["queue_by_model_tier"] == {"fast": "agents-fast"}
    assert contract["max_payload_bytes"] == 4096


def test_the_worker_reads_the_argument_names_the_schema_publishes() -> None:
    """One name everywhere: a sender using the schema's names, positionally or as keywords."""
    names = run_request_schema()["x-executus"]["args"]
    request = RunRequest(run_id="r1", agent="demo.counter").to_json()
    positional = split_args(["r1", request], {})
    keyword = split_args([], dict(zip(names, ["r1", request], strict=True)))
    assert positional == keyword == ("r1", request, None)
    assert parse_request(keyword[1], 10_000).agent == "demo.counter"
