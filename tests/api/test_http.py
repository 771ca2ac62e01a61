"""The HTTP API over real HTTP: a real `executus-worker api` process, a real Redis, no worker
(the broker list is read to see what was published)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis

from executus_worker.client import Client
from executus_worker.core.models import Message, RunStatus
from executus_worker.settings import Settings

from .harness import TOKEN, ApiServer, Reply, SseEvent

pytestmark = pytest.mark.redis


def new_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def counter(run_id: str, steps: int = 2, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "agent": "demo.counter", "input": {"steps": steps}} | extra


def queued_messages(api: ApiServer) -> list[list[Any]]:
    """The ``executus.run`` args waiting on the server's queue (what a worker would get)."""
    r = redis.Redis.from_url(api.redis_url)
    try:
        out = []
        for raw in r.lrange(api.queue, 0, -1):
            args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
            out.append(args)
        return out
    finally:
        r.close()


def store_client(api: ApiServer) -> Client:
    return Client.from_url(
        api.redis_url, key_prefix=api.prefix, settings=Settings.model_construct()
    )


# -- the document and the probes -----------------------------------------------------------


def test_the_openapi_document_is_public_and_describes_every_operation(api: ApiServer) -> None:
    reply = api.request("GET", "/openapi.json", auth=False)
    assert reply.status == 200
    doc = reply.json()
    operations = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert {
        ("/v1/runs", "post"),
        ("/v1/runs/{run_id}", "get"),
        ("/v1/runs/{run_id}/transcript", "get"),
        ("/v1/runs/{run_id}/cancel", "post"),
        ("/v1/runs/{run_id}/events", "get"),
    } <= operations
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    enqueue = doc["paths"]["/v1/runs"]["post"]
    assert {"200", "201", "401", "409", "413", "422", "503"} <= set(enqueue["responses"])
    assert "RunRequest" in doc["components"]["schemas"]
    events = doc["paths"]["/v1/runs/{run_id}/events"]["get"]["responses"]["200"]
    assert "text/event-stream" in events["content"]


def test_health_probes_need_no_token(api: ApiServer) -> None:
    assert api.request("GET", "/healthz", auth=False).json() == {"status": "ok"}
    assert api.request("GET", "/readyz", auth=False).json() == {"status": "ok"}


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        "Bearer ",
        TOKEN,
    ],
)
def test_runs_need_the_exact_bearer_token(api: ApiServer, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    reply = api.request("GET", f"/v1/runs/{new_id()}", headers=headers, auth=False)
    assert reply.status == 401
    assert reply.error["code"] == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in reply.body.decode()


def test_an_unauthenticated_enqueue_is_refused_before_its_body_is_read(api: ApiServer) -> None:
    """Only the headers are sent: the 401 comes without waiting for the 10 MB body."""
    reply = declare_body(api, 10_000_000, auth=False)
    assert reply.status == 401


def declare_body(api: ApiServer, length: int, *, auth: bool = True) -> Reply:
    """POST /v1/runs announcing a ``length``-byte JSON body, send none, read the answer."""
    conn = api.connect()
    try:
        conn.putrequest("POST", "/v1/runs")
        headers = api.headers(auth) | {"Content-Type": "application/json"}
        for name, value in (headers | {"Content-Length": str(length)}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def test_the_scheme_is_case_insensitive(api: ApiServer) -> None:
    reply = api.request(
        "GET", f"/v1/runs/{new_id()}", headers={"Authorization": f"bearer {TOKEN}"}, auth=False
    )
    assert reply.status == 404


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_registers_publishes_once_and_is_idempotent_on_run_id(api: ApiServer) -> None:
    run_id = new_id()
    first = api.request("POST", "/v1/runs", json_body=counter(run_id))
    assert first.status == 201, first.body
    assert first.headers["location"] == f"/v1/runs/{run_id}"
    document = first.json()
    assert document["created"] is True
    assert document["run"]["status"] == "queued"
    assert document["run"]["queue"] == api.queue
    assert document["run"]["request"]["input"] == {"steps": 2}

    again = api.request("POST", "/v1/runs", json_body=counter(run_id))
    assert again.status == 200
    assert again.json()["created"] is False
    assert again.json()["run"]["created_at"] == document["run"]["created_at"]
    # Defaults spelled out are the same request.
    spelled = counter(run_id, schema_version=1, limits={"max_iterations": 50}, metadata={})
    assert api.request("POST", "/v1/runs", json_body=spelled).status == 200

    sent = [args for args in queued_messages(api) if args[0] == run_id]
    assert len(sent) == 1
    assert json.loads(sent[0][1])["input"] == {"steps": 2}


def test_the_same_run_id_with_another_request_is_a_409_naming_the_fields(api: ApiServer) -> None:
    run_id = new_id()
    assert api.request("POST", "/v1/runs", json_body=counter(run_id)).status == 201
    changed = counter(run_id, steps=5, metadata={"team": "a"})
    reply = api.request("POST", "/v1/runs", json_body=changed)
    assert reply.status == 409
    error = reply.error
    assert error["code"] == "run_conflict"
    assert error["run_id"] == run_id
    assert error["fields"] == ["input.steps", "metadata.team"]
    assert "input.steps" in error["message"]
    # Nothing changed, nothing sent.
    status = api.request("GET", f"/v1/runs/{run_id}").json()
    assert status["request"]["input"] == {"steps": 2}
    assert len([a for a in queued_messages(api) if a[0] == run_id]) == 1


def test_an_enqueue_without_run_id_gets_a_fresh_one(api: ApiServer) -> None:
    reply = api.request("POST", "/v1/runs", json_body={"agent": "demo.counter"})
    assert reply.status == 201
    run_id = reply.json()["run"]["run_id"]
    assert len(run_id) == 32
    assert api.request("GET", f"/v1/runs/{run_id}").status == 200


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"run_id": "x"}, "body.agent"),
        ({"agent": "demo.counter", "surprise": 1}, "body.surprise"),
        ({"agent": "demo.counter", "limits": {"max_iterations": 0}}, "body.limits.max_iterations"),
        ({"agent": "bad agent name"}, "body.agent"),
        ({"agent": "demo.counter", "run_id": "has space"}, "body.run_id"),
        ({"agent": "demo.counter", "schema_version": 2}, "body.schema_version"),
        ([1, 2], "body"),
    ],
)
def test_an_invalid_request_is_a_422_saying_where(api: ApiServer, body: Any, where: str) -> None:
    reply = api.request("POST", "/v1/runs", json_body=body)
    assert reply.status == 422, reply.body
    error = reply.error
    assert error["code"] == "invalid_request"
    assert where in error["where"]
    assert where in error["message"]


def test_broken_json_is_a_422(api: ApiServer) -> None:
    reply = api.request(
        "POST", "/v1/runs", body=b'{"agent": "demo.', headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422
    assert reply.error["code"] == "invalid_request"


def test_a_body_that_is_not_utf8_is_a_422(api: ApiServer) -> None:
    reply = api.request(
        "POST", "/v1/runs", body=b'{"agent": "\xff"}', headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422
    assert reply.error["message"] == "request body is not UTF-8 (at byte 11)"


def test_an_unknown_query_parameter_is_refused_not_ignored(api: ApiServer) -> None:
    """A misspelt override must not quietly mean its default."""
    body = counter(new_id())
    reply = api.request("POST", "/v1/runs?allow_unknown_agents=true", json_body=body)
    assert reply.status == 422
    assert reply.error["where"] == ["query.allow_unknown_agents"]
    assert api.request("GET", f"/v1/runs/{new_id()}?verbose=1").status == 422


def test_a_body_that_is_not_json_is_a_415(api: ApiServer) -> None:
    reply = api.request(
        "POST",
        "/v1/runs",
        body=b"agent=demo.counter",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 415
    assert "application/json" in reply.error["message"]


def test_a_declared_body_over_the_cap_is_a_413_before_it_is_read(api: ApiServer) -> None:
    reply = declare_body(api, 300_000)
    assert reply.status == 413
    assert reply.error["code"] == "body_too_large"
    assert "300000 bytes, over the 262144-byte limit" in reply.error["message"]


def test_a_chunked_body_is_read_only_up_to_the_cap(api: ApiServer) -> None:
    """No length announced: the server counts what arrives and answers once past the cap."""
    conn = api.connect()
    try:
        conn.putrequest("POST", "/v1/runs")
        for name, value in (api.headers() | {"Content-Type": "application/json"}).items():
            conn.putheader(name, value)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        for _ in range(5):  # 320 KiB, never terminated: the answer cannot wait for the end
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        response = conn.getresponse()
        assert response.status == 413
        assert "at least" in json.loads(response.read())["error"]["message"]
    finally:
        conn.close()


def test_json_nested_past_the_cap_is_a_422_before_it_is_parsed(api: ApiServer) -> None:
    deep = b'{"agent": "demo.counter", "input": {"x": ' + b"[" * 500 + b"]" * 500 + b"}}"
    reply = api.request("POST", "/v1/runs", body=deep, headers={"Content-Type": "application/json"})
    assert reply.status == 422
    assert "deeper than 64 levels" in reply.error["message"]
    # Nesting up to the cap is fine (the body object counts as one level).
    ok = {"agent": "demo.counter", "run_id": new_id(), "input": {"x": _nested(62)}}
    assert api.request("POST", "/v1/runs", json_body=ok).status == 201


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: ApiServer) -> None:
    missing = api.request("GET", "/v1/nothing-here")
    assert missing.status == 404
    assert missing.error["code"] == "not_found"
    wrong = api.request("DELETE", "/v1/runs")
    assert wrong.status == 405
    assert wrong.error["code"] == "method_not_allowed"


# -- status, transcript, cancel -------------------------------------------------------------


def test_unknown_runs_are_404_everywhere(api: ApiServer) -> None:
    run_id = new_id()
    for method, path in [
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/transcript"),
        ("POST", f"/v1/runs/{run_id}/cancel"),
        ("GET", f"/v1/runs/{run_id}/events"),
    ]:
        reply = api.request(method, path)
        assert reply.status == 404, (method, path, reply.body)
        assert reply.error == {
            "code": "run_not_found",
            "message": f"run {run_id!r} not found",
            "run_id": run_id,
        }


def test_a_malformed_run_id_is_a_422(api: ApiServer) -> None:
    reply = api.request("GET", "/v1/runs/bad%20id")
    assert reply.status == 422
    assert reply.error["where"] == ["path.run_id"]


def test_cancel_ends_a_queued_run_at_once(api: ApiServer) -> None:
    run_id = new_id()
    api.request("POST", "/v1/runs", json_body=counter(run_id))
    reply = api.request("POST", f"/v1/runs/{run_id}/cancel")
    assert reply.status == 200
    assert reply.json()["status"] == "cancelled"
    assert reply.json()["cancel_requested"] is True
    assert api.request("GET", f"/v1/runs/{run_id}").json()["status"] == "cancelled"


def test_the_transcript_of_a_finished_run_with_offset_and_limit(api: ApiServer) -> None:
    run_id = new_id()
    api.request("POST", "/v1/runs", json_body=counter(run_id, steps=3))
    messages = [Message(role="assistant", content=f"step {i}") for i in (1, 2, 3)]
    with store_client(api) as client:
        finish(client, run_id, messages, output="done 3")
    status = api.request("GET", f"/v1/runs/{run_id}").json()
    assert (status["status"], status["output"]) == ("completed", "done 3")
    whole = api.request("GET", f"/v1/runs/{run_id}/transcript").json()
    assert whole["total"] == 3
    assert [m["content"] for m in whole["messages"]] == ["step 1", "step 2", "step 3"]
    page = api.request("GET", f"/v1/runs/{run_id}/transcript?offset=1&limit=1").json()
    assert (page["offset"], page["total"]) == (1, 3)
    assert [m["content"] for m in page["messages"]] == ["step 2"]


def finish(client: Client, run_id: str, messages: list[Message], output: Any) -> None:
    """Play a worker's part on the store: claim, then finish as completed."""
    claim = client.store.claim(run_id, owner="test", lease_ttl_s=30, max_attempts=5, now=1.0)
    assert claim.fence is not None
    client.store.finish(
        run_id,
        fence=claim.fence,
        status=RunStatus.COMPLETED,
        output=output,
        error=None,
        base_len=0,
        new_messages=messages,
        now=time.time(),
        result_ttl_s=60,
    )
    client.event_log.append(run_id, "completed", {"iterations": len(messages)})


# -- the event stream (the live run is in test_e2e.py) ---------------------------------------


def test_the_stream_of_a_finished_run_replays_it_and_ends(api: ApiServer) -> None:
    run_id = new_id()
    api.request("POST", "/v1/runs", json_body=counter(run_id, steps=2))
    with store_client(api) as client:
        finish(client, run_id, [Message(role="assistant", content=f"step {i}") for i in (1, 2)],
               output="done 2")  # fmt: skip
    with api.stream(f"/v1/runs/{run_id}/events") as (response, events):
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        assert response.getheader("cache-control") == "no-cache"
        got = [e for e in events if isinstance(e, SseEvent)]
    enqueued, completed, first, second, status, end = got  # audit entries, then messages
    assert (enqueued.event, enqueued.data["event"]) == ("audit", "enqueued")
    assert enqueued.id == f"0/{enqueued.data['id']}"
    assert (completed.event, completed.data["event"]) == ("audit", "completed")
    assert [(e.event, e.id) for e in (first, second)] == [
        ("message", f"1/{completed.data['id']}"), ("message", f"2/{completed.data['id']}")
    ]  # fmt: skip
    assert first.data == {"index": 0, "message": _message("step 1")}
    assert (status.event, status.data["status"], status.data["messages"]) == (
        "status",
        "completed",
        2,
    )
    assert (end.event, end.data) == ("end", {"reason": "terminal", "status": "completed"})


def test_a_reconnect_with_last_event_id_sends_only_what_is_new(api: ApiServer) -> None:
    run_id = new_id()
    api.request("POST", "/v1/runs", json_body=counter(run_id, steps=3))
    with store_client(api) as client:
        finish(client, run_id, [Message(role="assistant", content=f"step {i}") for i in (1, 2, 3)],
               output="done 3")  # fmt: skip
    path = f"/v1/runs/{run_id}/events"
    with api.stream(path) as (_, events):
        ids = [e.id for e in events if isinstance(e, SseEvent) and e.id]
    with api.stream(path, headers={"Last-Event-ID": ids[-1]}) as (_, events):
        assert [e.event for e in events if isinstance(e, SseEvent)] == ["status", "end"]
    # After two messages and every audit entry: only the third message is new.
    with api.stream(path, headers={"Last-Event-ID": "2/" + ids[-1].split("/")[1]}) as (_, events):
        got = [e for e in events if isinstance(e, SseEvent) and e.event != "status"]
    assert [(e.event, e.data.get("index")) for e in got] == [("message", 2), ("end", None)]
    # ?after= counts messages only: the audit entries come again.
    with api.stream(f"{path}?after=3") as (_, events):
        got = [e for e in events if isinstance(e, SseEvent)]
    assert [e.event for e in got] == ["audit", "audit", "status", "end"]
    with api.stream(f"{path}?after=5") as (_, events):
        # The client holds more than exists: it is told to cut back.
        got = [e for e in events if isinstance(e, SseEvent) and e.event != "audit"]
    assert (got[0].event, got[0].data) == ("rewind", {"messages": 3})
    assert got[0].id is not None and got[0].id.startswith("3/")
    bad = api.request("GET", path, headers={"Last-Event-ID": "two"})
    assert bad.status == 422
    assert bad.error["where"] == ["header.last-event-id"]


def _message(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": [], "tool_call_id": None,
            "name": None}  # fmt: skip


# -- what the server logs ------------------------------------------------------------------


def test_the_token_is_never_logged(api: ApiServer) -> None:
    """Checked last in this module: every request above went through this server."""
    api.request("GET", f"/v1/runs/{new_id()}")
    api.request("GET", f"/v1/runs/{new_id()}", headers={"Authorization": "Bearer nope"})
    log = api.log()
    assert "GET /v1/runs/" in log  # the access log is on, and it is this server's
    assert TOKEN not in log
    assert TOKEN[:16] not in log
