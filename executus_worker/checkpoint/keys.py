"""Every Redis key the store uses, in one place (the way arq keeps ``arq/constants.py``).

Per-run keys share the hash tag ``{run:<id>}`` so a run's record, lease, checkpoint meta and
transcript live in one Redis Cluster slot and one script can touch them all. The two global
indexes are what ``list_runs`` and the sweep walk, so nothing ever scans the keyspace.

    <prefix>:{run:<id>}:rec     hash    the run record (status, request JSON, epoch, ...)
    <prefix>:{run:<id>}:lease   string  "<owner>:<epoch>", PX TTL = lease_ttl_s
    <prefix>:{run:<id>}:ckpt    hash    checkpoint meta (format version, iteration, phases, ...)
    <prefix>:{run:<id>}:msgs    string  the transcript as one JSON array, '[m1\\n,m2]' (codec.py)
    <prefix>:{run:<id>}:events  stream  the run's audit events, XADD MAXLEN ~ (events.py)
    <prefix>:{run:<id>}:spend   hash    tokens and cost across all attempts (spend.py)
    <prefix>:runs:active        zset    non-terminal run ids, score = created_at
    <prefix>:runs:done          zset    finished run ids, score = finished_at, trimmed to retention
    <prefix>:spend:{guild:<g>}:<yyyy-mm-dd>  hash  a guild's tokens and cost that UTC day

The events and spend keys carry a TTL refreshed on every write, like every other per-run key of
a finished run; a guild's daily counter expires two days after its day began.

The global indexes have no TTL by design (they are bounded: active by live runs, done by the
retention window); every per-run key of a finished run carries a TTL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunKeys:
    """The four per-run keys plus the two indexes, in the order the Lua scripts expect."""

    rec: str
    lease: str
    ckpt: str
    msgs: str
    active: str
    done: str

    def all(self) -> list[str]:
        return [self.rec, self.lease, self.ckpt, self.msgs, self.active, self.done]


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "executus"

    @property
    def active(self) -> str:
        return f"{self.prefix}:runs:active"

    @property
    def done(self) -> str:
        return f"{self.prefix}:runs:done"

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
        )
