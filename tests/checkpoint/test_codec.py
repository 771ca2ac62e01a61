"""The codec: compact JSON out, typed errors in; raw pydantic/JSON errors never escape."""

from __future__ import annotations

import pytest

from executus_worker.checkpoint import codec
from executus_worker.core.models import Checkpoint, Message
from executus_worker.errors import CorruptCheckpointError, UnsupportedFormatError

from .conformance import NOW, msgs, request


def test_messages_are_compact_json_without_defaults() -> None:
    assert codec.encode_message(Message(role="user", content="hi")) == (
        '{"role":"user","content":"hi"}'
    )


def test_transcript_decodes_in_one_parse() -> None:
    items = [codec.encode_message(m).encode() for m in msgs(3)]
    assert codec.decode_messages("r", "k", codec.join_items(items)) == msgs(3)
    assert codec.decode_messages("r", "k", codec.join_items([])) == []


@pytest.mark.parametrize("raw", [b"[{", b'[{"role":"alien"}]', b"[1]", b"\xff\xfe"])
def test_bad_transcript_bytes_raise_corrupt_checkpoint(raw: bytes) -> None:
    with pytest.raises(CorruptCheckpointError) as info:
        codec.decode_messages("run-9", "the:msgs", raw)
    assert info.value.run_id == "run-9" and "the:msgs" in str(info.value)


def test_record_round_trip_and_missing_fields() -> None:
    fields = codec.record_fields(request(), run_id="r", queue="q", now=NOW)
    record = codec.decode_record("r", "k", fields)
    assert (record.status, record.queue, record.created_at) == ("queued", "q", NOW)
    del fields["request"]
    with pytest.raises(CorruptCheckpointError, match="missing field 'request'"):
        codec.decode_record("r", "k", fields)


def _meta(**over: str) -> dict[str, str]:
    meta = codec.meta_fields(Checkpoint(run_id="r", iteration=2), epoch=1, now=NOW)
    meta.update(over)
    return meta


def test_meta_round_trip() -> None:
    cp = codec.decode_checkpoint("r", meta_key="m", msgs_key="l", meta=_meta(), messages_json=b"[]")
    assert (cp.iteration, cp.epoch, cp.updated_at, cp.messages) == (2, 1, NOW, [])


@pytest.mark.parametrize(
    ("field", "value"),
    [("format_version", "x"), ("epoch", "one"), ("phase_outputs", "[]"), ("active_phase", "{")],
)
def test_bad_meta_raises_corrupt_checkpoint(field: str, value: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=r"'r'.*ckpt-key"):
        codec.decode_checkpoint(
            "r", meta_key="ckpt-key", msgs_key="l", meta=_meta(**{field: value}),
            messages_json=b"[]",
        )  # fmt: skip


def test_newer_format_raises_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError, match="upgrade"):
        codec.decode_checkpoint(
            "r", meta_key="m", msgs_key="l", meta=_meta(format_version="99"), messages_json=b"[]"
        )


def test_a_record_whose_output_nests_too_deeply_is_corrupt_not_a_recursion() -> None:
    fields = codec.record_fields(request(), run_id="r", queue="q", now=NOW)
    fields["output"] = "[" * 100_000 + "]" * 100_000
    with pytest.raises(CorruptCheckpointError, match="output"):
        codec.decode_record("r", "k", fields)
