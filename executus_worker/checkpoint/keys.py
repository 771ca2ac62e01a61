"""Every Redis key the store uses, in one place (the way arq keeps ``arq/constants.py``).

Per-run keys share the hash tag ``{run:<id>}`` so a run's record, lease, checkpoint meta and
transcript live in one Redis Cluster slot and one script can touch them all. The global indexes
are what ``list_runs`` and the recovery sweep read, so nothing ever scans the keyspace.

    <prefix>:{run:<id>}:rec     hash    the run record (status, request JSON, epoch, ...)
    <prefix>:{run:<id>}:lease   string  "<owner>:<epoch>", PX TTL = lease_ttl_s
    <prefix>:{run:<id>}:ckpt    hash    checkpoint meta (format version, iteration, phases, ...)
    <prefix>:{run:<id>}:msgs    string  the transcript as one JSON array, '[m1\\n,m2]' (codec.py)
    <prefix>:{run:<id>}:events  stream  the run's audit events, XADD MAXLEN ~ (events.py)
    <prefix>:{run:<id>}:spend   hash    tokens and cost across all attempts (spend.py)
    <prefix>:runs:active        zset    non-terminal run ids, score = created_at
    <prefix>:runs:done          zset    finished run ids, score = finished_at, trimmed to retention
    <prefix>:runs:due           zset    running and interrupted run ids, score = when the run
                                        becomes a recovery candidate: its lease deadline (pushed
                                        forward by every renewal), or the interrupt time
    <prefix>:runs:waiting       zset    queued run ids, score = base such that the run is a
                                        candidate once base <= now - queued_timeout_s (the base
                                        carries its re-publish backoff)
    <prefix>:runs:audit         string  where the index audit resumes in runs:active (a rank)
    <prefix>:spend:{guild:<g>}:<yyyy-mm-dd>  hash  a guild's tokens and cost that UTC day

The events and spend keys carry a TTL refreshed on every write, like every other per-run key of
a finished run; a guild's daily counter expires two days after its day began.

Every non-terminal run is in ``runs:active`` and in exactly one of ``runs:due`` /
``runs:waiting``, so a sweep reads only the runs that are due (``recovery_index.py``).
The global keys have no TTL by design (they are bounded: active, due and waiting by live runs,
done by the retention window); every per-run key of a finished run carries a TTL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunKeys:
    """The four per-run keys plus the indexes, in the order the Lua scripts expect."""

    rec: str
    lease: str
    ckpt: str
    msgs: str
    active: str
    done: str
    due: str
    waiting: str

    def all(self) -> list[str]:
        return [
            self.rec, self.lease, self.ckpt, self.msgs,
            self.active, self.done, self.due, self.waiting,
        ]  # fmt: skip


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "executus"

    @property
    def active(self) -> str:
        return f"{self.prefix}:runs:active"

    @property
    def done(self) -> str:
        return f"{self.prefix}:runs:done"

    @property
    def due(self) -> str:
        return f"{self.prefix}:runs:due"

    @property
    def waiting(self) -> str:
        return f"{self.prefix}:runs:waiting"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:runs:audit"

    @property
    def indexes(self) -> tuple[str, ...]:
        """Every global key (no TTL by design)."""
        return (self.active, self.done, self.due, self.waiting, self.audit)

    def run_base(self, run_id: str) -> str:
        return f"{self.prefix}:{{run:{run_id}}}"

    def rec(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:rec"

    def msgs(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:msgs"

    def ckpt(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:ckpt"

    def lease(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:lease"

    def events(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:events"

    def spend(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:spend"

    def guild_spend(self, guild_id: str, day: str) -> str:
        return f"{self.prefix}:spend:{{guild:{guild_id}}}:{day}"

    def run(self, run_id: str) -> RunKeys:
        base = self.run_base(run_id)
        return RunKeys(
            rec=f"{base}:rec",
            lease=f"{base}:lease",
            ckpt=f"{base}:ckpt",
            msgs=f"{base}:msgs",
            active=self.active,
            done=self.done,
            due=self.due,
            waiting=self.waiting,
        )
