"""One exception root for everything executus_worker raises on purpose.

    ExecutusError
    ├── ConfigError                 settings, agents file, schedule file
    ├── PayloadError                a run request that is malformed, wrong-schema or oversized
    ├── UnknownAgentError           an agent the worker does not know, or (at enqueue) no
    │                               live worker serves
    ├── RunLimitExceeded            a run reached limits.max_iterations without finishing
    ├── ModelError                  the model endpoint refused, timed out or answered nonsense
    ├── CheckpointError
    │   ├── CorruptCheckpointError  stored bytes that do not decode (names the run and key)
    │   └── UnsupportedFormatError  a checkpoint written by a newer format version
    ├── RunNotFoundError            a run id with no run record
    ├── WaitTimeout                 Client.wait gave up (also a builtin TimeoutError; defined
    │                               in client.ports because it carries the last RunRecord)
    ├── RunConflictError            an existing run id enqueued again with a different payload
    ├── PublishError                a registered run whose message the broker did not take
    ├── StoreError                  Redis said something the store did not expect
    └── ScheduleError               an unparseable cron, unknown timezone or bad job

Stops are *not* here: they derive from BaseException and live in ``core.stop`` (why: see there).
``OwnershipLost`` is both: it is a stop (a stale owner must unwind through agent code that
catches ``Exception``) and it is raised by the stores when an epoch check fails.

This module imports nothing of ours: every layer, ``core`` included, can raise these.
"""


class ExecutusError(Exception):
    """Root of every error executus_worker raises deliberately."""


class ConfigError(ExecutusError):
    """Invalid configuration: settings, the agents file or the schedule file."""


class PayloadError(ExecutusError):
    """A run request that cannot be accepted: not JSON, wrong schema, or over the size cap."""


class UnknownAgentError(ExecutusError):
    """The request names an agent that is not registered on this worker, or -- raised at
    enqueue -- that no live worker advertises on the run's queue."""


class RunLimitExceeded(ExecutusError):
    """A run reached one of its limits (``limits.max_iterations``) without finishing."""


class ModelError(ExecutusError):
    """The model endpoint failed for good: rejected the request or the key, stayed overloaded
    or unreachable through every retry, or sent a reply that is not a chat completion."""


class CheckpointError(ExecutusError):
    """A stored checkpoint that cannot be used."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"run {run_id!r}: {detail}")
        self.run_id = run_id
        self.detail = detail


class CorruptCheckpointError(CheckpointError):
    """The stored checkpoint bytes do not decode into a valid checkpoint."""


class TranscriptBehind(CorruptCheckpointError):
    """A fenced write found fewer stored messages than its writer saved: Redis lost writes
    (a restart with AOF ``everysec``, a failover, a restore) while this claim survived. The
    owner still holds the whole transcript in memory and rewrites it (see RunHandle)."""


class UnsupportedFormatError(CheckpointError):
    """The checkpoint was written with a format version this code cannot read (a newer worker
    wrote it). ``version`` is that format: a worker reading it can resume the run."""

    def __init__(self, run_id: str, detail: str, *, version: int = 0) -> None:
        super().__init__(run_id, detail)
        self.version = version


class RunNotFoundError(ExecutusError):
    """No run record exists for this run id (never registered, or expired after retention)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found")
        self.run_id = run_id


class RunConflictError(ExecutusError):
    """A run id that already exists was enqueued again with a different request.

    A run id is an idempotency key, bound to the payload it was first registered with: the
    same payload returns the existing run, a different one is refused rather than silently
    answered with a run that does something else. ``fields`` names what differs (``input``,
    ``input.steps``, ``limits.max_iterations``, ...), never the values (they may carry user
    content). The existing run is left unchanged and nothing is published.
    """

    def __init__(self, run_id: str, fields: tuple[str, ...]) -> None:
        super().__init__(
            f"run {run_id!r} already exists with a different request "
            f"(differs in: {', '.join(fields)}); nothing was changed or sent: "
            "enqueue the same request again, or use a new run id"
        )
        self.run_id = run_id
        self.fields = fields


class PublishError(ExecutusError):
    """The run is registered (``queued``) but the broker did not take its message.

    Nothing is lost: the recovery sweep re-publishes a run left ``queued`` longer than
    ``queued_timeout_s``. Enqueueing the same run id again does not re-publish it.
    """

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(
            f"run {run_id!r} is registered but its message was not published ({detail}); "
            "the recovery sweep will re-publish it"
        )
        self.run_id = run_id
        self.detail = detail


class StoreError(ExecutusError):
    """The backing store answered something unexpected."""


class ScheduleError(ExecutusError):
    """A scheduled job that cannot fire: bad cron, unknown timezone or invalid run template."""
