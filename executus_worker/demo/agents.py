"""``demo.counter.traced`` and ``demo.phased.traced``: the built-in demo agents, with a witness.

Each model step appends ``{run, epoch, fence, pid, msg, t0, t1}`` to a Redis list as it returns,
with ``t0``/``t1`` from ``time.monotonic()`` (one system-wide clock on a host, so steps from
different worker processes compare). The demo reads the list at the end and proves from it
that no two claims of a run ever stepped at the same time -- the check is as good as the
witness, so it records the step itself, not what the worker says about it.

The worker loads these through ``EXECUTUS_AGENTS_FILE`` (see ``agents_file_text``); the list
is ``<EXECUTUS_KEY_PREFIX>:demo:trace`` on ``EXECUTUS_REDIS_URL``, read when a step runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from executus_worker.core.demo_agents import CounterAgent, PhasedAgent
from executus_worker.core.models import Message, RunInfo
from executus_worker.core.ports import Agent, Model, ModelReply, ModelRequest, Tools

COUNTER = "demo.counter.traced"
PHASED = "demo.phased.traced"
TRACE_TTL_S = 3600  # the demo deletes the list; this bounds what an aborted demo leaves
_clients: dict[int, redis.Redis] = {}


def trace_key(key_prefix: str) -> str:
    return f"{key_prefix}:demo:trace"


def agents_file_text() -> str:
    return (
        "[agents]\n"
        f'"{COUNTER}" = "executus_worker.demo.agents:counter"\n'
        f'"{PHASED}" = "executus_worker.demo.agents:phased"\n'
    )


@dataclass(frozen=True)
class Step:
    run: str
    epoch: int
    pid: int
    msg: str
    t0: float
    t1: float
    fence: str = ""  # unique per claim (the epoch is for people and could repeat)

    @property
    def claim(self) -> tuple[int, str]:
        return self.epoch, self.fence


def read_trace(client: redis.Redis, key_prefix: str) -> list[Step]:
    return [Step(**json.loads(raw)) for raw in client.lrange(trace_key(key_prefix), 0, -1)]


def _record(step: Step) -> None:
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:  # one client per process: prefork children must not share a socket
        client = _clients[pid] = redis.Redis.from_url(os.environ["EXECUTUS_REDIS_URL"])
    key = trace_key(os.environ.get("EXECUTUS_KEY_PREFIX", "executus"))
    pipe = client.pipeline(transaction=False)
    pipe.rpush(key, json.dumps(step.__dict__))
    pipe.expire(key, TRACE_TTL_S)
    pipe.execute()


class _TracedModel:
    def __init__(self, inner: Model, run: RunInfo) -> None:
        self._inner, self._run = inner, run

    def complete(self, request: ModelRequest) -> ModelReply:
        t0 = time.monotonic()
        reply = self._inner.complete(request)
        msg = reply.message.content if reply.message else ""
        run = self._run
        _record(Step(run.run_id, run.epoch, os.getpid(), msg, t0, time.monotonic(), run.fence))
        return reply


class _Traced:
    def __init__(self, inner: Agent, name: str) -> None:
        self._inner, self.name = inner, name

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return self._inner.phases(run)

    def model(self, run: RunInfo) -> Model:
        return _TracedModel(self._inner.model(run), run)

    def tools(self, run: RunInfo) -> Tools:
        return self._inner.tools(run)

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        return self._inner.seed(run, phase)


def counter() -> Agent:
    return _Traced(CounterAgent(), COUNTER)


def phased() -> Agent:
    return _Traced(PhasedAgent(), PHASED)
