"""Transcript repair: every assistant tool call is followed by exactly one result.

Chat-completions APIs reject a conversation in which an assistant tool call has no ``tool``
message answering it, or a ``tool`` message answers no call. The kernel commits a step only
whole (the reply together with all its results), but a transcript can still come back
unpaired: a checkpoint written by other code, an agent that seeds its own messages, a stop
raised between a reply and its results by code that saved the reply first. A resumed run must
never show the model such a call, so the conversion to the wire runs through this function:

- a call without a result gets a synthetic tool error saying the result was lost, right after
  its assistant message (the model can call the tool again if it still needs it);
- results are moved to directly after the message that made the call, in call order;
- a result that answers no earlier call, or a second result for the same call, is dropped.

Pure and O(n): it never changes the stored transcript, only what is sent.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from executus_worker.core.models import Message

LOST_RESULT = (
    "error: this tool call has no result: the run was interrupted before the call finished. "
    "Call the tool again if you still need its result."
)


@dataclass(frozen=True)
class Repair:
    messages: list[Message]
    missing: int  # calls that got a synthetic error result
    dropped: int  # tool messages that answered no call (or answered one twice)

    @property
    def changed(self) -> bool:
        return bool(self.missing or self.dropped)


def pair_tool_results(messages: Sequence[Message]) -> Repair:
    """The transcript with each tool call directly followed by its one result."""
    # Positions of each call id's results, in order: a result counts only if it comes after
    # the call it answers.
    results: dict[str, deque[int]] = defaultdict(deque)
    for index, message in enumerate(messages):
        if message.role == "tool" and message.tool_call_id is not None:
            results[message.tool_call_id].append(index)
    used: set[int] = set()
    out: list[Message] = []
    missing = 0
    for index, message in enumerate(messages):
        if message.role == "tool":
            continue  # emitted with the call it answers, or dropped
        out.append(message)
        if message.role != "assistant":
            continue
        for call in message.tool_calls:
            positions = results.get(call.id)
            while positions and positions[0] < index:
                positions.popleft()  # a result from before this call answers something else
            if positions:
                position = positions.popleft()
                used.add(position)
                out.append(messages[position])
            else:
                missing += 1
                out.append(
                    Message(role="tool", tool_call_id=call.id, name=call.name, content=LOST_RESULT)
                )
    tool_messages = sum(1 for m in messages if m.role == "tool")
    return Repair(messages=out, missing=missing, dropped=tool_messages - len(used))
