"""A deterministic model and agent for tests, the demo and users' own tests (no network).

``ScriptedModel`` answers from a list of replies (in order) or from a function of the request.
A function that derives its answer from the transcript survives resume: the demo agents work
that way. A list is simpler but restarts from its first reply in every new process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from executus_worker.core.models import Message, RunInfo, ToolCall
from executus_worker.core.ports import Model, ModelReply, ModelRequest, NoTools, Tools, Usage
from executus_worker.errors import ExecutusError


class ScriptExhausted(ExecutusError):
    """A list-driven ScriptedModel was asked for more replies than it was given."""


def say(
    text: str,
    *,
    done: bool = False,
    output: JsonValue = None,
    tool_calls: Sequence[ToolCall] = (),
    usage: Usage | None = None,
) -> ModelReply:
    """An assistant reply: ``say("hi")``, ``say("bye", done=True, output=...)``."""
    message = Message(role="assistant", content=text, tool_calls=tuple(tool_calls))
    return ModelReply(message=message, done=done, output=output, usage=usage or Usage())


Script = Sequence[ModelReply | str] | Callable[[ModelRequest], ModelReply]


class ScriptedModel:
    """A Model that answers from a script; records every request it saw in ``requests``."""

    def __init__(self, script: Script) -> None:
        self._function: Callable[[ModelRequest], ModelReply] | None = None
        self._replies: list[ModelReply] = []
        if callable(script):
            self._function = script
        else:
            self._replies = [say(item) if isinstance(item, str) else item for item in script]
        self._lock = threading.Lock()
        self._next = 0
        self.requests: list[ModelRequest] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    def complete(self, request: ModelRequest) -> ModelReply:
        with self._lock:
            self.requests.append(request)
            if self._function is not None:
                return self._function(request)
            if self._next >= len(self._replies):
                raise ScriptExhausted(
                    f"scripted model has {len(self._replies)} replies; call {self._next + 1}"
                )
            reply = self._replies[self._next]
            self._next += 1
            return reply


@dataclass
class ScriptedAgent:
    """An Agent assembled from parts; ``model`` is shared by every run of this agent."""

    name: str
    model_: Model
    phase_names: Sequence[str] | None = None
    seeds: Mapping[str | None, Sequence[Message]] = field(default_factory=dict)
    tools_: Tools = field(default_factory=NoTools)

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return self.phase_names

    def model(self, run: RunInfo) -> Model:
        return self.model_

    def tools(self, run: RunInfo) -> Tools:
        return self.tools_

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        return self.seeds.get(phase, ())
