"""A declared (no-code) agent on the OpenAI-compatible adapter, through real worker processes.

The model is the fake OpenAI-compatible server, served from this test process over loopback
HTTP; its replies derive from the transcript it is sent, like a real model at temperature 0.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from executus_worker.client import Client
from executus_worker.core.models import Message, RunStatus
from executus_worker.models.fake_server import Answer, FakeOpenAI, completion, tool_call

from .harness import Cluster, wait_for

pytestmark = pytest.mark.e2e

TICKS = 5
STEP_S = 0.4  # each model answer takes this long: SIGTERM lands mid-run
SECRET = "sk-e2e-never-in-a-log"
AGENTS = """
[agents."e2e.ticker"]
system_prompt = "Count by calling tick."
tools = ["e2e_tools:tick"]
max_iterations = 20
"""


def brain(body: dict[str, Any]) -> Answer:
    done = sum(1 for m in body["messages"] if m["role"] == "tool")
    if done >= TICKS:
        return Answer(body=completion(f"counted to {TICKS}"), delay_s=STEP_S)
    call = tool_call(f"call_{done + 1}", "tick", {"a": done, "b": 1})
    return Answer(body=completion(f"step {done + 1}", tool_calls=[call]), delay_s=STEP_S)


def expected_transcript() -> list[tuple[str, str]]:
    out = [("user", "count")]
    for i in range(1, TICKS + 1):
        out += [("assistant", f"step {i}"), ("tool", str(i))]
    return [*out, ("assistant", f"counted to {TICKS}")]


def shape(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


def unanswered_calls(messages: list[dict[str, Any]]) -> list[str]:
    """Tool calls not directly followed by their results, in one request the model got."""
    missing = []
    for index, message in enumerate(messages):
        ids = [c["id"] for c in message.get("tool_calls") or ()]
        answers = [m.get("tool_call_id") for m in messages[index + 1 : index + 1 + len(ids)]]
        missing += [i for i in ids if i not in answers]
    return missing


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(brain) as server:
        yield server


def test_a_declared_agent_calling_a_tool_survives_sigterm_with_the_exact_transcript(
    cluster: Cluster, fake: FakeOpenAI, timing
) -> None:
    agents = cluster.tmp_path / "declared.toml"
    agents.write_text(AGENTS)
    cluster.settings.update(
        EXECUTUS_AGENTS_FILE=str(agents),
        EXECUTUS_MODEL_BASE_URL=fake.base_url,
        EXECUTUS_MODEL_NAME="fake-model",
        EXECUTUS_MODEL_API_KEY_ENV="E2E_MODEL_KEY",
        E2E_MODEL_KEY=SECRET,
    )
    a = cluster.start("prefork")
    # Advertised before "ready." was logged: producers can check the agent at enqueue.
    with Client.from_url(cluster.redis_url, key_prefix=cluster.prefix) as client:
        [worker] = client.agents().serving("e2e.ticker", cluster.queue)
        assert worker.worker == a.name + "@" + socket.gethostname()
    run_id = cluster.submit("e2e.ticker", prompt="count")
    wait_for("two finished steps", lambda: len(fake.requests) >= 3, 30)
    a.signal(signal.SIGTERM)
    timing("prefork exit after SIGTERM mid declared run", a.wait_exit(timeout_s=30))
    assert a.proc.returncode == 0
    assert cluster.record(run_id).status is RunStatus.INTERRUPTED
    checkpoint = cluster.store.load_checkpoint(run_id)
    assert checkpoint is not None
    # Only whole steps were kept: a prefix of the final transcript, each call with its result.
    kept = shape(checkpoint.messages)
    assert kept == expected_transcript()[: len(kept)]
    assert kept[-1][0] == "tool"

    b = cluster.start("prefork")
    final = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=60)
    assert final.output == f"counted to {TICKS}"
    assert shape(cluster.store.transcript(run_id)) == expected_transcript()

    # The model never saw a tool call without its result, before or after the resume.
    assert [unanswered_calls(r["messages"]) for r in fake.requests] == [[]] * len(fake.requests)
    assert all(r["messages"][0]["content"] == "Count by calling tick." for r in fake.requests)
    assert {h["authorization"] for h in fake.headers} == {f"Bearer {SECRET}"}
    # A warm stop re-runs nothing: each tool call ran once, under its own idempotency key.
    calls = cluster.steps(run_id, "tool")
    assert [c["key"] for c in calls] == [f"{run_id}:{i}:call_{i}" for i in range(1, TICKS + 1)]
    # Each claim's own fence reached the tool: a downstream service can refuse a stale owner.
    fences = {c["epoch"]: c["fence"] for c in calls}
    assert len(fences) == 2 and len(set(fences.values())) == 2 and all(fences.values())
    assert SECRET not in a.text() + b.text()
    assert SECRET.encode() not in stored_bytes(cluster)


def stored_bytes(cluster: Cluster) -> bytes:
    """Every value under the test's key prefix (records, checkpoints, transcripts, adverts)."""
    r = cluster.client
    out = []
    for key in r.scan_iter(f"{cluster.prefix}:*"):
        kind = r.type(key)
        if kind == b"string":
            out.append(r.get(key) or b"")
        elif kind == b"hash":
            out += [k + v for k, v in r.hgetall(key).items()]
        elif kind == b"zset":
            out += r.zrange(key, 0, -1)
        elif kind == b"list":
            out += r.lrange(key, 0, -1)
    assert out, "nothing stored under the prefix: the check would prove nothing"
    return b"\n".join(out)
