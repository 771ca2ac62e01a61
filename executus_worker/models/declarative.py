"""Agents without code: declared as tables in the agents file, run on an OpenAI-compatible model.

    [agents."support.triage"]
    model_tier = "fast"                 # a tier from EXECUTUS_MODEL_TIERS (default: "default")
    model = "gpt-4o-mini"               # optional: overrides the tier's model name
    system_prompt = "You triage support tickets. ..."
    tools = ["my_pkg.tools:lookup_order", "my_pkg.tools:refund"]
    max_iterations = 8                  # model steps per loop (or per phase)
    tool_timeout_s = 30                 # optional: default EXECUTUS_TOOL_TIMEOUT_S

    [[agents."support.triage".phases]]  # optional: named phases, run in order
    name = "investigate"
    instructions = "Find the order and what went wrong."
    max_iterations = 5                  # optional: this phase's own limit

The run's input becomes the first user message: ``input.prompt`` when that is all there is,
else the input as JSON. Each phase starts with a user message carrying its instructions; the
transcript runs on across phases, so a phase sees what the earlier ones did.

``max_iterations`` bounds the model steps of a loop without failing it: the last allowed step
is sent with tools switched off (``tool_choice: none``), so the model must answer, and that
answer ends the loop (or the phase). Steps are counted from the transcript, never from process
memory, so the bound holds across resumes. ``limits.max_iterations`` of the request still caps
the whole run and fails it when reached.

A request's ``model_tier`` picks the tier (it also picks the queue); the agent's ``model_tier``
is the default. A bad table is a ConfigError naming the file, the agent and the field, raised
when the file is loaded; a tool that cannot be imported, when the agent is first built.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from executus_worker.core.agents import AgentFactory, DeclaredAgents
from executus_worker.core.models import Message, RunInfo
from executus_worker.core.outcome import describe
from executus_worker.core.ports import Agent, Model, ModelReply, ModelRequest, Tools
from executus_worker.errors import ConfigError
from executus_worker.models.endpoints import ModelEndpoint, resolve_endpoint
from executus_worker.models.openai_chat import OpenAIChatModel
from executus_worker.models.tools import FunctionTools, as_tool
from executus_worker.settings import Settings

PhaseName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
ToolPath = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")]
Iterations = Annotated[int, Field(ge=1, le=10_000)]
_PHASE_MARK = "executus.phase:"  # Message.name of a phase's seed: where its steps start


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhaseSpec(_Strict):
    name: PhaseName
    instructions: str = ""
    max_iterations: Iterations | None = None


class AgentSpec(_Strict):
    description: str = ""
    model_tier: str | None = Field(default=None, min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1)
    system_prompt: str = ""
    tools: list[ToolPath] = Field(default_factory=list)
    max_iterations: Iterations = 10
    tool_timeout_s: float | None = Field(default=None, gt=0)
    phases: list[PhaseSpec] | None = Field(default=None, min_length=1)

    @field_validator("phases")
    @classmethod
    def _unique(cls, phases: list[PhaseSpec] | None) -> list[PhaseSpec] | None:
        names = [p.name for p in phases or ()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate phase names {duplicates}")
        return phases

    def limit(self, phase: str | None) -> int:
        for spec in self.phases or ():
            if spec.name == phase and spec.max_iterations is not None:
                return spec.max_iterations
        return self.max_iterations


def declared_agents(settings: Settings) -> DeclaredAgents:
    """The loader the registry calls for each table in the agents file."""

    def load(name: str, table: Mapping[str, Any], source: str) -> AgentFactory:
        where = f"{source}: agent {name!r}"
        try:
            spec = AgentSpec.model_validate(dict(table))
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_problems(exc)}") from None
        try:  # the tier and a model name must exist now, not at the first run
            resolve_endpoint(settings, spec.model_tier, spec.model)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

        def build() -> Agent:
            return DeclarativeAgent(name, spec, settings, tools=load_tools(spec, where, settings))

        return build

    return load


def load_tools(spec: AgentSpec, where: str, settings: Settings) -> FunctionTools:
    found = []
    for path in spec.tools:
        module_name, _, attr_path = path.partition(":")
        try:
            obj: object = importlib.import_module(module_name)
            for attr in attr_path.split("."):
                obj = getattr(obj, attr)
            found.append(as_tool(obj))
        except ConfigError as exc:
            raise ConfigError(f"{where}: tool {path!r}: {exc}") from None
        except Exception as exc:  # an import can raise anything: report it, with the entry
            raise ConfigError(f"{where}: tool {path!r} cannot be loaded: {describe(exc)}") from exc
    try:
        return FunctionTools(found, timeout_s=spec.tool_timeout_s or settings.tool_timeout_s)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<table>'}: {err['msg']}"
        for err in exc.errors()[:10]
    )


class DeclarativeAgent:
    """The Agent a table declares. One per process; thread-safe."""

    def __init__(
        self,
        name: str,
        spec: AgentSpec,
        settings: Settings,
        *,
        tools: FunctionTools,
        chat_model: Callable[[ModelEndpoint, str], OpenAIChatModel] | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._settings = settings
        self._tools = tools
        self._chat_model = chat_model or _new_chat_model
        self._lock = threading.Lock()
        # One adapter (one SDK client and connection pool) per endpoint, shared by runs.
        self._models: dict[ModelEndpoint, OpenAIChatModel] = {}

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return None if self.spec.phases is None else [p.name for p in self.spec.phases]

    def model(self, run: RunInfo) -> Model:
        endpoint = resolve_endpoint(
            self._settings, run.model_tier or self.spec.model_tier, self.spec.model
        )
        with self._lock:
            chat = self._models.get(endpoint)
            if chat is None:
                chat = self._models[endpoint] = self._chat_model(endpoint, self.spec.system_prompt)
        return StepLimited(chat, self.spec)

    def tools(self, run: RunInfo) -> Tools:
        return self._tools

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        messages = []
        first = self.spec.phases[0].name if self.spec.phases else None
        if run.input and phase == first:
            messages.append(Message(role="user", content=input_text(run)))
        if phase is not None:
            messages.append(self._phase_message(phase))
        return messages

    def _phase_message(self, phase: str) -> Message:
        spec = next(p for p in self.spec.phases or () if p.name == phase)
        text = f"Phase {phase}: {spec.instructions}" if spec.instructions else f"Phase {phase}."
        return Message(role="user", content=text, name=_PHASE_MARK + phase)

    def close(self) -> None:
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for chat in models:
            chat.close()


def _new_chat_model(endpoint: ModelEndpoint, system_prompt: str) -> OpenAIChatModel:
    return OpenAIChatModel(endpoint, system_prompt=system_prompt or None)


def input_text(run: RunInfo) -> str:
    prompt = run.input.get("prompt")
    if isinstance(prompt, str) and len(run.input) == 1:
        return prompt
    return json.dumps(run.input, ensure_ascii=False, sort_keys=True)


def steps_in_loop(messages: Sequence[Message], phase: str | None) -> int:
    """Model steps taken in the current loop: the whole run, or since the phase's seed."""
    start = 0
    if phase is not None:
        mark = _PHASE_MARK + phase
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].name == mark:
                start = index
                break
    return sum(1 for m in messages[start:] if m.role == "assistant")


class StepLimited:
    """The agent's model with ``max_iterations`` applied: the last step may not call tools."""

    def __init__(self, chat: OpenAIChatModel, spec: AgentSpec) -> None:
        self._chat = chat
        self._spec = spec

    def complete(self, request: ModelRequest) -> ModelReply:
        taken = steps_in_loop(request.messages, request.phase)
        final = taken + 1 >= self._spec.limit(request.phase)
        return self._chat.chat(request, final=final)
