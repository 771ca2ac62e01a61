"""Tools from plain Python functions: type hints -> argument model -> JSON schema for the model.

    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, float]:
        '''The current temperature in a city.'''

    tools = FunctionTools([get_weather])

The argument model is built from the signature with pydantic (``Annotated[str, Field(
description=...)]`` documents a parameter); the function's docstring is the tool description.
A parameter annotated ``ToolContext`` (any name) receives the call's context -- run id,
fencing token, idempotency key -- and is not part of the schema.

Whatever goes wrong in a call is a ``tool`` message starting with ``error:`` that the model
reads and can react to, never a failed run: an unknown tool, arguments that do not validate
(or are not JSON), a tool that raises, a tool still running after its timeout. Only stops
(``BaseException``: shutdown, cancel, lost ownership) unwind the run, wherever they are raised.

A call with a timeout runs on its own daemon thread while the caller waits: that keeps the
caller's thread free to receive a shutdown escalation (prefork raises it in the main thread),
and lets a hung tool be abandoned. Python cannot kill a thread, so an abandoned call keeps
running in the background until it returns: give tools their own I/O timeouts too.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError, create_model
from pydantic_core import to_json

from executus_worker.core.models import Message, RunInfo, ToolCall
from executus_worker.core.ports import ToolSpec
from executus_worker.core.toolctx import ToolContext, current_tool_context
from executus_worker.errors import ConfigError

log = logging.getLogger(__name__)

# A tool call whose arguments were not a JSON object keeps the raw text under this key, so the
# transcript stays faithful (the adapter sends it back verbatim) and the tool layer can say so.
RAW_ARGUMENTS_KEY = "__raw_arguments__"
_MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True)
class FunctionTool:
    """One function exposed as a tool. Build it with :func:`tool`."""

    name: str
    description: str
    fn: Callable[..., object]
    arguments: type[BaseModel]
    context_param: str | None = None
    timeout_s: float | None = None  # None: the FunctionTools default

    @property
    def spec(self) -> ToolSpec:
        schema: dict[str, JsonValue] = self.arguments.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)


def tool(
    fn: Callable[..., object],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
) -> FunctionTool:
    """A tool from ``fn``: ConfigError (naming the function) if its signature cannot be one."""
    where = f"tool {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    if not callable(fn):
        raise ConfigError(f"{where}: not callable")
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise ConfigError(f"{where}: cannot read its signature: {exc}") from exc
    fields: dict[str, Any] = {}
    context_param = None
    for param in signature.parameters.values():
        hint = hints.get(param.name, Any)
        if hint is ToolContext or hint == (ToolContext | None):
            context_param = param.name
            continue
        if param.kind in {param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY}:
            raise ConfigError(
                f"{where}: parameter {param.name!r} must be an ordinary keyword parameter "
                "(the model passes arguments by name)"
            )
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hint, default)
    tool_name = name or getattr(fn, "__name__", "")
    if not tool_name or not _valid_name(tool_name):
        raise ConfigError(f"{where}: tool name {tool_name!r} must match [A-Za-z0-9_-]{{1,64}}")
    try:
        arguments = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        arguments.model_json_schema()  # a hint with no JSON schema fails here, not mid-run
    except Exception as exc:  # pydantic raises several types for unusable hints
        raise ConfigError(f"{where}: its parameters cannot become a JSON schema: {exc}") from exc
    doc = inspect.getdoc(fn) or ""
    return FunctionTool(
        name=tool_name,
        description=description if description is not None else doc.split("\n\n")[0].strip(),
        fn=fn,
        arguments=arguments,
        context_param=context_param,
        timeout_s=timeout_s,
    )


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def as_tool(obj: object) -> FunctionTool:
    """A FunctionTool as is, or a plain function made into one."""
    if isinstance(obj, FunctionTool):
        return obj
    if callable(obj):
        return tool(obj)
    raise ConfigError(f"{obj!r} is neither a function nor a FunctionTool")


class FunctionTools:
    """The ``Tools`` port over plain functions. Thread-safe: it holds no per-call state."""

    def __init__(
        self,
        tools: Iterable[FunctionTool | Callable[..., object]],
        *,
        timeout_s: float | None = 60.0,
    ) -> None:
        self._tools: dict[str, FunctionTool] = {}
        for item in tools:
            built = as_tool(item)
            if built.name in self._tools:
                raise ConfigError(f"two tools are named {built.name!r}")
            self._tools[built.name] = built
        self._timeout_s = timeout_s
        self._specs = tuple(t.spec for t in self._tools.values())

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
        return self._specs

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        content = self._content(run, call)
        return Message(role="tool", tool_call_id=call.id, name=call.name, content=content)

    def _content(self, run: RunInfo, call: ToolCall) -> str:
        found = self._tools.get(call.name)
        if found is None:
            known = ", ".join(self._tools) or "none"
            return f"error: no tool named {call.name!r}; the tools are: {known}"
        if RAW_ARGUMENTS_KEY in call.arguments:
            raw = str(call.arguments[RAW_ARGUMENTS_KEY])
            return _error(f"the arguments of {call.name!r} are not a JSON object: {raw}")
        try:
            validated = found.arguments.model_validate(call.arguments)
        except ValidationError as exc:
            return _error(f"bad arguments for {call.name!r}: {_problems(exc)}")
        kwargs: dict[str, object] = dict(validated)
        if found.context_param is not None:
            kwargs[found.context_param] = current_tool_context() or _fallback_context(run, call)
        timeout_s = found.timeout_s if found.timeout_s is not None else self._timeout_s
        try:
            result = _invoke(found, kwargs, timeout_s)
        except _ToolTimedOut:
            log.warning("run %s: tool %s timed out after %ss", run.run_id, call.name, timeout_s)
            return _error(f"tool {call.name!r} did not finish within {timeout_s:g}s")
        except Exception as exc:  # the tool's own failure: reported to the model, logged here
            log.warning(
                "run %s: tool %s raised %s", run.run_id, call.name, type(exc).__name__,
                exc_info=True,
            )  # fmt: skip
            message = str(exc)
            detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            return _error(f"tool {call.name!r} failed: {detail}")
        return render_result(result)


def render_result(result: object) -> str:
    """A tool's return value as message text: strings as they are, the rest as JSON."""
    if isinstance(result, str):
        return result
    try:
        return to_json(result).decode()
    except Exception:  # not JSON-serialisable: its text is still better than failing the call
        return str(result)


def _error(text: str) -> str:
    return "error: " + (text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "…")


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<arguments>'}: {err['msg']}"
        for err in exc.errors()[:10]
    )


def _fallback_context(run: RunInfo, call: ToolCall) -> ToolContext:
    """Outside the kernel's dispatch (a direct call in a test): all but the iteration."""
    return ToolContext(
        run_id=run.run_id, fence=run.fence, epoch=run.epoch, iteration=0, call_id=call.id
    )


class _ToolTimedOut(Exception):
    pass


def _invoke(found: FunctionTool, kwargs: dict[str, object], timeout_s: float | None) -> object:
    if timeout_s is None:
        return found.fn(**kwargs)
    box: dict[str, object] = {}
    finished = threading.Event()
    # The kernel's ToolContext (a contextvar) must be visible on the tool's thread too.
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(found.fn, **kwargs)
        except BaseException as exc:  # handed to the caller's thread, which decides
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name=f"executus-tool-{found.name}", daemon=True).start()
    # A shutdown escalation raised into this wait (prefork's SIGUSR1) propagates from here.
    if not finished.wait(timeout_s):
        raise _ToolTimedOut
    error = box.get("error")
    if isinstance(error, BaseException):
        raise error  # Exceptions become error messages; stops unwind the run
    return box.get("value")
