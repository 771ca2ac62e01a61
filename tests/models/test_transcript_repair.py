"""Every tool call the model is shown has exactly one result, right after it."""

from __future__ import annotations

from executus_worker.core.models import Message, ToolCall
from executus_worker.models.transcript import LOST_RESULT, pair_tool_results


def user(text: str) -> Message:
    return Message(role="user", content=text)


def calls(*ids: str) -> Message:
    return Message(
        role="assistant", tool_calls=tuple(ToolCall(id=i, name="t", arguments={}) for i in ids)
    )


def result(call_id: str, text: str = "ok") -> Message:
    return Message(role="tool", tool_call_id=call_id, name="t", content=text)


def shape(messages: list[Message]) -> list[str]:
    out = []
    for m in messages:
        if m.role == "tool":
            out.append(f"tool:{m.tool_call_id}:{'LOST' if m.content == LOST_RESULT else m.content}")
        elif m.tool_calls:
            out.append("calls:" + ",".join(c.id for c in m.tool_calls))
        else:
            out.append(f"{m.role}:{m.content}")
    return out


def test_a_paired_transcript_is_unchanged() -> None:
    messages = [user("go"), calls("a", "b"), result("a"), result("b"), user("more")]
    repair = pair_tool_results(messages)
    assert repair.messages == messages
    assert not repair.changed


def test_a_call_without_a_result_gets_a_lost_result_error() -> None:
    """The crash between the model's reply and the tool results."""
    repair = pair_tool_results([user("go"), calls("a", "b"), result("a")])
    assert shape(repair.messages) == ["user:go", "calls:a,b", "tool:a:ok", "tool:b:LOST"]
    assert (repair.missing, repair.dropped) == (1, 0)


def test_results_move_next_to_their_call_in_call_order() -> None:
    messages = [calls("a", "b"), result("b", "B"), user("interjection"), result("a", "A")]
    repair = pair_tool_results(messages)
    assert shape(repair.messages) == ["calls:a,b", "tool:a:A", "tool:b:B", "user:interjection"]
    assert not repair.changed


def test_orphan_and_duplicate_results_are_left_out() -> None:
    messages = [result("x"), calls("a"), result("a", "1"), result("a", "2"), result("zz")]
    repair = pair_tool_results(messages)
    assert shape(repair.messages) == ["calls:a", "tool:a:1"]
    assert (repair.missing, repair.dropped) == (0, 3)


def test_a_reused_call_id_is_answered_by_the_result_after_each_call() -> None:
    messages = [calls("a"), result("a", "first"), calls("a"), user("u")]
    repair = pair_tool_results(messages)
    assert shape(repair.messages) == ["calls:a", "tool:a:first", "calls:a", "tool:a:LOST", "user:u"]
