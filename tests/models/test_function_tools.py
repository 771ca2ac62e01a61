"""Tools from plain functions: schema from type hints; every failure is a message, never a crash."""

from __future__ import annotations

import threading
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from executus_worker.core.models import RunInfo, ToolCall
from executus_worker.core.stop import OwnershipLost, RunStopped
from executus_worker.core.toolctx import ToolContext, tool_context
from executus_worker.errors import ConfigError
from executus_worker.models.tools import RAW_ARGUMENTS_KEY, FunctionTools, tool

RUN = RunInfo(run_id="run-t", agent="a", epoch=3)


class Point(BaseModel):
    x: float
    y: float


def add(a: int, b: int = 1) -> int:
    """Add two integers.

    More detail that is not part of the description.
    """
    return a + b


def weather(
    city: Annotated[str, Field(description="The city name")],
    unit: Literal["C", "F"] = "C",
) -> dict[str, object]:
    """The temperature in a city."""
    return {"city": city, "unit": unit, "t": 21.5}


def distance(a: Point, b: Point) -> float:
    """Distance between two points."""
    return float(((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5)


def explode(reason: str) -> str:
    raise RuntimeError(f"boom: {reason}")


def whoami(ctx: ToolContext, note: str = "") -> str:
    """Echo the call's context."""
    return f"{ctx.run_id}|{ctx.fence}|{ctx.idempotency_key}|{note}"


def call(tools: FunctionTools, name: str, **arguments: object) -> str:
    message = tools.call(RUN, ToolCall(id="c1", name=name, arguments=arguments))  # type: ignore[arg-type]
    assert message.role == "tool"
    assert message.tool_call_id == "c1"
    assert message.name == name
    return message.content


def test_the_schema_comes_from_the_type_hints_and_the_description_from_the_docstring() -> None:
    specs = {s.name: s for s in FunctionTools([add, weather, distance, whoami]).specs(RUN)}
    assert specs["add"].description == "Add two integers."
    assert specs["add"].parameters["properties"] == {
        "a": {"title": "A", "type": "integer"},
        "b": {"default": 1, "title": "B", "type": "integer"},
    }
    assert specs["add"].parameters["required"] == ["a"]
    assert specs["add"].parameters["additionalProperties"] is False
    city = specs["weather"].parameters["properties"]["city"]  # type: ignore[index]
    assert city["description"] == "The city name"  # type: ignore[index]
    unit = specs["weather"].parameters["properties"]["unit"]  # type: ignore[index]
    assert unit["enum"] == ["C", "F"]  # type: ignore[index]
    assert "Point" in specs["distance"].parameters["$defs"]  # type: ignore[operator]
    # The context parameter is the kernel's, not the model's.
    assert set(specs["whoami"].parameters["properties"]) == {"note"}  # type: ignore[arg-type]


def test_a_call_validates_its_arguments_and_renders_the_result() -> None:
    tools = FunctionTools([add, weather, distance])
    assert call(tools, "add", a=2, b=3) == "5"
    assert call(tools, "add", a="4") == "5"  # lax mode: a JSON string of digits is an int
    assert call(tools, "weather", city="Oslo") == '{"city":"Oslo","unit":"C","t":21.5}'
    assert call(tools, "distance", a={"x": 0, "y": 0}, b={"x": 3, "y": 4}) == "5.0"


def test_an_unknown_tool_is_an_error_message_listing_the_tools() -> None:
    content = call(FunctionTools([add]), "mul", a=1)
    assert content == "error: no tool named 'mul'; the tools are: add"


def test_bad_arguments_are_an_error_message_naming_each_problem() -> None:
    tools = FunctionTools([add, weather])
    content = call(tools, "add", b="x", c=1)
    assert content.startswith("error: bad arguments for 'add': ")
    assert "a: Field required" in content
    assert "b: Input should be a valid integer" in content
    assert "c: Extra inputs are not permitted" in content
    assert "unit: Input should be 'C' or 'F'" in call(tools, "weather", city="x", unit="K")


def test_arguments_that_were_not_json_are_reported_as_such() -> None:
    content = call(FunctionTools([add]), "add", **{RAW_ARGUMENTS_KEY: "{a: 1"})
    assert content == "error: the arguments of 'add' are not a JSON object: {a: 1"


def test_a_tool_that_raises_is_an_error_message_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    content = call(FunctionTools([explode]), "explode", reason="disk full")
    assert content == "error: tool 'explode' failed: RuntimeError: boom: disk full"
    assert "run run-t: tool explode raised RuntimeError" in caplog.text


def test_a_tool_that_hangs_is_abandoned_after_its_timeout() -> None:
    release = threading.Event()

    def hang() -> str:
        release.wait(30)
        return "late"

    try:
        tools = FunctionTools([tool(hang, timeout_s=0.2)], timeout_s=60)
        assert call(tools, "hang") == "error: tool 'hang' did not finish within 0.2s"
    finally:
        release.set()


def test_a_stop_raised_inside_a_tool_unwinds_the_run_instead_of_becoming_a_message() -> None:
    def fenced_write() -> str:
        raise OwnershipLost("the fence moved on")

    for timeout_s in (None, 5.0):
        tools = FunctionTools([fenced_write], timeout_s=timeout_s)
        with pytest.raises(RunStopped):
            call(tools, "fenced_write")


def test_a_tool_declaring_a_context_gets_the_kernels_context_on_its_own_thread() -> None:
    tools = FunctionTools([whoami], timeout_s=5)
    ctx = ToolContext(run_id="run-t", fence="f-123", epoch=3, iteration=4, call_id="c1")
    with tool_context(ctx):
        assert call(tools, "whoami", note="n") == "run-t|f-123|run-t:4:c1|n"
    # Outside the kernel (a direct call): the run's identity, no fence.
    assert call(tools, "whoami") == "run-t||run-t:0:c1|"


def test_functions_that_cannot_be_tools_are_refused_with_their_name() -> None:
    def star(*items: int) -> int:
        return 0

    def slash(a: int, /) -> int:
        return a

    with pytest.raises(ConfigError, match=r"test_function_tools\..*star: parameter 'items'"):
        tool(star)
    with pytest.raises(ConfigError, match="parameter 'a' must be an ordinary keyword"):
        tool(slash)
    with pytest.raises(ConfigError, match="tool name 'bad name'"):
        tool(add, name="bad name")
    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        FunctionTools([add, tool(weather, name="add")])


def test_a_non_json_result_falls_back_to_its_text() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    def make() -> object:
        return Opaque()

    assert call(FunctionTools([make]), "make") == "<opaque>"
