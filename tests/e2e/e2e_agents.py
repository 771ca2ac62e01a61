"""Agents the e2e tests register through ``EXECUTUS_AGENTS_FILE`` (imported by the *worker*).

``e2e.counter`` and ``e2e.phased`` are the demo agents with every model step logged to a Redis
list -- start and end, with the attempt's epoch and the process id -- so a test can prove who
ran which step when (one owner at a time, which steps re-ran). ``e2e.poison`` SIGKILLs its own
process on every step: a run that crashes its worker on every attempt. ``e2e.stuck`` blocks
its first step in a call that does not return for ``block_s`` (an hour by default).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence

import redis

from executus_worker.core.demo_agents import CounterAgent, PhasedAgent
from executus_worker.core.models import Message, RunInfo
from executus_worker.core.ports import Agent, Model, ModelReply, ModelRequest, Tools
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel

_clients: dict[int, redis.Redis] = {}


# How long a step waits for the step log through a Redis outage (the fault tests restart it).
_LOG_PATIENCE_S = 30.0


def _log(event: dict[str, object]) -> None:
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:  # one client per process: prefork children must not share sockets
        # E2E_STEPS_URL: straight to Redis even when the worker's own URLs go through a proxy.
        url = os.environ.get("E2E_STEPS_URL") or os.environ["EXECUTUS_REDIS_URL"]
        client = _clients[pid] = redis.Redis.from_url(url, socket_timeout=5)
    key = f"{os.environ['EXECUTUS_KEY_PREFIX']}:e2e:steps"
    deadline = time.monotonic() + _LOG_PATIENCE_S
    while True:
        try:
            client.rpush(key, json.dumps(event))
            return
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            # The record of a step must not be what fails a run during a Redis restart.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class _LoggedModel:
    def __init__(self, inner: Model, run: RunInfo) -> None:
        self._inner = inner
        self._run = run

    def complete(self, request: ModelRequest) -> ModelReply:
        run = self._run
        base = {"run": run.run_id, "epoch": run.epoch, "fence": run.fence, "pid": os.getpid()}
        _log({**base, "ev": "start", "phase": request.phase, "t": time.time()})
        reply = self._inner.complete(request)
        content = reply.message.content if reply.message else ""
        _log({**base, "ev": "end", "phase": request.phase, "msg": content, "t": time.time()})
        return reply


class _Logged:
    def __init__(self, inner: Agent, name: str) -> None:
        self._inner = inner
        self.name = name

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return self._inner.phases(run)

    def model(self, run: RunInfo) -> Model:
        return _LoggedModel(self._inner.model(run), run)

    def tools(self, run: RunInfo) -> Tools:
        return self._inner.tools(run)

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        return self._inner.seed(run, phase)


class _PoisonModel:
    def complete(self, request: ModelRequest) -> ModelReply:
        _log({"run": request.run.run_id, "epoch": request.run.epoch, "ev": "poison"})
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class _Poison(_Logged):
    def model(self, run: RunInfo) -> Model:
        return _PoisonModel()


def counter() -> Agent:
    return _Logged(CounterAgent(), "e2e.counter")


def phased() -> Agent:
    return _Logged(PhasedAgent(), "e2e.phased")


def poison() -> Agent:
    return _Poison(CounterAgent(), "e2e.poison")


def _stuck_step(request: ModelRequest) -> ModelReply:
    run = request.run
    _log({"run": run.run_id, "epoch": run.epoch, "pid": os.getpid(), "ev": "start",
          "t": time.time()})  # fmt: skip
    time.sleep(float(str(run.input.get("block_s", 3600))))
    raise AssertionError("the stuck step was expected to be interrupted")


def stuck() -> Agent:
    return ScriptedAgent("e2e.stuck", ScriptedModel(_stuck_step))
