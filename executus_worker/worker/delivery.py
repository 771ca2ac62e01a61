"""``RunDelivery``: the worker's (MainProcess) request class for ``executus.run`` messages.

Two things Celery cannot do from the task body, done where Celery itself does them:

- **What the worker shows of a delivery.** ``celery inspect active|reserved|scheduled|
  query_task`` print a request's real arguments, and ``task-received`` events (Flower) carry
  the sender's ``argsrepr`` -- which ``send_task`` from another service fills with the whole
  request, input included. Both show ``[run_id, {"agent": ...}]`` here instead: the run id and
  the agent, never the input -- also in Celery's "received" log line, whose structured context
  carries the same arguments. Computed when first asked (that line, at INFO, asks per message:
  one parse of a small JSON request).
- **Which message a run's ending may settle.** The message's delivery tag and kombu's unacked
  keys travel to the task in its request (``SETTLE_KEY``), so FINISH can remove the unacked
  entry itself and the ack skips its round trip (``checkpoint/settle.py``).
- **REVOKED for a cancelled run.** Celery writes REVOKED and sends ``task-revoked`` only from
  this process, when it revokes a request itself. A run cancelled through our store (the client,
  ``executus-worker cancel``, a revoke seen by another worker) ends its task with
  ``reporting.RunCancelled``; this class announces it exactly as Celery's own revoke does.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from billiard import einfo
from celery.worker.request import Request

from executus_worker.worker import preclaim
from executus_worker.worker.messages import split_args, valid_run_id
from executus_worker.worker.reporting import RunCancelled
from executus_worker.worker.transport import settle_spec

# A request bigger than this is not parsed just to show its agent (the run id still shows).
_MAX_SHOWN_REQUEST_BYTES = 1 << 20
_MAX_AGENT_CHARS = 200
UNKNOWN = "?"
_WITH_TRACEBACK: type[Any] = getattr(einfo, "ExceptionWithTraceback")  # noqa: B009 -- not in stubs
# Set on the task context a cancelled run's REVOKED announcement carries to ``task_revoked``
# receivers: the revoke hook has nothing left to cancel.
CANCELLED_MARK = "executus_run_cancelled"
# The task request field that carries ``transport.settle_spec`` of the message to the task.
SETTLE_KEY = "executus_settle"


def run_and_agent(args: Any, kwargs: Any, task_id: str | None = None) -> tuple[str, str]:
    """The run id and agent an ``executus.run`` message names, as far as they can be read
    (never raises: this is for display and for mapping a revoke to its run)."""
    try:
        raw_run_id, raw_request, _ = split_args(args or (), kwargs or {})
    except Exception:  # arguments of an unexpected shape: show what is certain
        raw_run_id, raw_request = None, None
    request = _as_mapping(raw_request)
    run_id = valid_run_id(raw_run_id) or valid_run_id(request.get("run_id"))
    run_id = run_id or valid_run_id(task_id) or UNKNOWN
    agent = request.get("agent")
    if not isinstance(agent, str) or not 0 < len(agent) <= _MAX_AGENT_CHARS:
        agent = UNKNOWN
    return run_id, agent


def _as_mapping(raw: object) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str | bytes) and len(raw) <= _MAX_SHOWN_REQUEST_BYTES:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}
    return {}


class ShownArgs(str):
    """What a delivery shows of its arguments, knowing which run it names: Celery's own log
    line on receipt passes it along, and our log filter (observability.logs) names the run."""

    run_id: str | None

    def __new__(cls, text: str, *, run_id: str) -> ShownArgs:
        shown = super().__new__(cls, text)
        shown.run_id = None if run_id == UNKNOWN else run_id
        return shown


class RunDelivery(Request):
    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        spec = settle_spec(message)
        if spec is not None:
            self._request_fields()[SETTLE_KEY] = spec

    def revoked(self) -> bool:
        # Celery asks this right before it hands the message to the pool (and nowhere it does
        # not): a claim made on the message's receipt goes with it, the task's to take
        # (worker/preclaim.py). A message that never gets here is acked or rejected, and its
        # claim released then. (Celery builds a subclass that replaces execute_using_pool.)
        if super().revoked():
            return True
        claims = preclaim.PRECLAIMS
        tag = getattr(getattr(self, "_message", None), "delivery_tag", None)
        forwarded = claims.forward(tag) if claims is not None and isinstance(tag, str) else None
        if forwarded is not None:
            self._request_fields()[preclaim.PRECLAIM_KEY] = forwarded
        return False

    def _request_fields(self) -> dict[str, Any]:
        # Celery's private request dict: the task sees its keys as ``self.request.<key>``.
        fields: dict[str, Any] = getattr(self, "_request_dict")  # noqa: B009 -- not in stubs
        return fields

    @cached_property
    def _shown_args(self) -> list[Any]:
        run_id, agent = run_and_agent(self.args, self.kwargs, self.id)
        return [run_id, {"agent": agent}]

    @property
    def argsrepr(self) -> str:
        # Plain repr: both parts are bounded strings (run_and_agent), and Celery's saferepr
        # walked them in ~26 calls per message on the consumer's hot path.
        return ShownArgs(repr(self._shown_args), run_id=self._shown_args[0])

    @property
    def kwargsrepr(self) -> str:
        return "{}"

    def info(self, safe: bool = False) -> Any:
        shown = super().info(safe=safe)
        shown["args"] = self.argsrepr if safe else self._shown_args
        shown["kwargs"] = self.kwargsrepr if safe else {}
        return shown

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.humaninfo()} {self.argsrepr} {self.kwargsrepr}>"

    def on_failure(
        self, exc_info: einfo.ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = exc_info.exception
        if isinstance(exc, _WITH_TRACEBACK):  # how prefork children ship an exception back
            exc = exc.exc
        if isinstance(exc, RunCancelled):
            # Celery's own announcement of a revoke (celery/worker/request.py): task-revoked
            # event, REVOKED in the result backend (if one stores results), ack, and the
            # task_revoked signal. Private, hence pinned by the e2e reporting tests.
            celery_side: Any = self  # private Celery API: not in the stubs
            setattr(celery_side._context, CANCELLED_MARK, True)  # the run is already cancelled
            celery_side._announce_revoked("cancelled", False, None, False)
            return None
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )
