"""Fuzz the running API from its own OpenAPI document (schemathesis): whatever a client sends,
valid or not, the server answers with a status, headers and a body its document promises, and
never a 5xx.

Driven through schemathesis's Python API with hypothesis (its pytest plugin predates the
pytest in use here): every operation, positive and negative cases, a bounded number each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from .harness import TOKEN, ApiServer

pytestmark = pytest.mark.redis

EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("fuzz") / "api.log"
    env = {
        "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false",
        # A stream on a run the fuzzer enqueued would last until the run ends: no worker here.
        "EXECUTUS_API_STREAM_MAX_S": "1",
    }
    server = ApiServer(redis_url, log, env=env)
    server.start()
    yield server
    server.stop()


def operations(api: ApiServer) -> list[Any]:
    # The token as the document's own security scheme: schemathesis then also sends requests
    # without it, or with a wrong one, and expects them refused.
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}})
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json", config=config)
    return [result.ok() for result in schema.get_all_operations()]


def test_the_document_has_every_operation(fuzz_api: ApiServer) -> None:
    labels = {op.label for op in operations(fuzz_api)}
    assert "POST /v1/runs" in labels
    assert "GET /v1/runs/{run_id}/events" in labels
    assert len(labels) == 7


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_to_its_own_document(fuzz_api: ApiServer, mode: GenerationMode) -> None:
    seen = {op.label: fuzz(op, mode, fuzz_api.base_url) for op in operations(fuzz_api)}
    print(mode.value, {label: sorted(codes) for label, codes in sorted(seen.items())})
    assert len(seen) == 7
    if mode is GenerationMode.NEGATIVE:
        assert 422 in seen["POST /v1/runs"]


def fuzz(operation: Any, mode: GenerationMode, base_url: str) -> set[int]:
    """Up to EXAMPLES cases of one operation; the statuses they got."""
    statuses: set[int] = set()
    takes_nothing = not operation.body and not list(operation.iter_parameters())
    if mode is GenerationMode.NEGATIVE and takes_nothing:
        return statuses  # nothing to get wrong (the health probes)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)  # fmt: skip
    def check(case: Any) -> None:
        statuses.add(case.call_and_validate(base_url=base_url, timeout=30).status_code)

    check()
    return statuses
