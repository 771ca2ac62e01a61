"""Several beats at once, and beats that die mid-tick: one run per fire, at most one lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from beat_world import PREFIX, World

from beat.enqueue import ClientEnqueuer
from beat.ticker import Ticker
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.client import Client
from executus_worker.core.models import RunRequest
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.store import FireOutcome, ScheduleStore
from executus_worker.schedules.timing import fire_run_id, format_fire
from executus_worker.settings import Settings

pytestmark = pytest.mark.redis

NOON = datetime(2026, 5, 1, 12, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


class SimulatedKill(BaseException):
    """What a tick sees of SIGKILL: nothing after this point runs (not even except Exception)."""


def _wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def _reported(world: World, run_id: str) -> bool:
    state = world.store.state("minutely")
    return state.last_run_id == run_id and state.last_outcome == FireOutcome.ENQUEUED.value


def test_three_beats_ticking_concurrently_create_exactly_one_run_per_fire(
    world: World, redis_url: str
) -> None:
    fires = 25
    world.add("minutely", "* * * * *", overlap="allow")
    stop = threading.Event()
    tickers: list[Ticker] = []
    connections: list[redis.Redis] = []
    for _ in range(3):
        conn = redis.Redis.from_url(redis_url)
        connections.append(conn)
        settings = Settings(redis_url=redis_url, key_prefix=PREFIX)
        client = Client(
            settings, store=RedisStore(conn, key_prefix=PREFIX), publisher=world.publisher
        )
        tickers.append(world.ticker(ClientEnqueuer(client), client=conn))

    def loop(ticker: Ticker) -> None:
        while not stop.is_set():
            ticker.tick()

    threads = [
        threading.Thread(target=loop, args=(t,), name=f"beat-{i}") for i, t in enumerate(tickers)
    ]
    world.clock.set(NOON - timedelta(seconds=30))
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: world.store.state("minutely").next_fire == "2026-05-01T12:00:00Z")
        for k in range(fires):
            nominal = NOON + timedelta(minutes=k)
            world.clock.set(nominal + timedelta(seconds=1))
            # Until the attempt has reported, not just registered: jumping the fake clock a
            # minute while it is in flight hands the fire to another beat (a takeover --
            # harmless, enqueue is idempotent -- but counted as a duplicate).
            _wait_for(lambda n=nominal: _reported(world, fire_run_id("minutely", n)))
            time.sleep(0.005)  # let the other beats see the due fire too
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for conn in connections:
            conn.close()

    expected = [fire_run_id("minutely", NOON + timedelta(minutes=k)) for k in range(fires)]
    assert world.run_ids() == expected
    assert sorted(world.publisher.sent) == expected  # one message each, none twice
    assert sum(t.stats.fired for t in tickers) == fires
    assert sum(t.stats.duplicates for t in tickers) == 0
    assert all(t.stats.ticks > fires for t in tickers)  # every beat really took part
    assert world.store.state("minutely").fires == fires


def test_a_beat_killed_between_reserve_and_enqueue_is_taken_over_once_its_attempt_expires(
    world: World,
) -> None:
    world.add("j", "*/5 * * * *", overlap="allow")
    world.ticker().tick()

    class KilledMidTick:
        def enqueue(self, request: RunRequest, run_id: str) -> bool:
            raise SimulatedKill

    world.clock.set(NOON + timedelta(seconds=1))
    with pytest.raises(SimulatedKill):
        world.ticker(KilledMidTick()).tick()
    state = world.store.state("j")
    assert state.next_fire == "2026-05-01T12:05:00Z"  # reserved before the enqueue
    assert (state.last_run_id, state.last_outcome) == ("sched:j:2026-05-01T12:00:00Z", "reserved")
    assert state.retry_at == (NOON + timedelta(seconds=31)).timestamp()  # 30 s attempt lease

    # Other beats (and a retried tick) while the dead beat's attempt could still report back:
    # nothing is redone yet.
    survivor, other = world.ticker(), world.ticker()
    world.clock.set(NOON + timedelta(seconds=20))
    survivor.tick()
    other.tick()
    assert world.run_ids() == []
    # Its lease has passed: exactly one of them takes the fire over.
    world.clock.set(NOON + timedelta(seconds=32))
    survivor.tick()
    other.tick()
    survivor.tick()
    assert world.run_ids() == ["sched:j:2026-05-01T12:00:00Z"]
    assert world.publisher.sent == ["sched:j:2026-05-01T12:00:00Z"]
    assert survivor.stats.retries + other.stats.retries == 1
    state = world.store.state("j")
    assert (state.last_outcome, state.attempts, state.fires) == ("enqueued", 2, 1)
    world.clock.set(NOON + timedelta(minutes=5, seconds=1))
    survivor.tick()
    assert world.run_ids() == ["sched:j:2026-05-01T12:00:00Z", "sched:j:2026-05-01T12:05:00Z"]
    assert len(world.publisher.sent) == 2


KILLED_BEAT = textwrap.dedent(
    """
    import os, signal, sys
    import redis
    from beat.enqueue import ClientEnqueuer
    from beat.ticker import Ticker
    from executus_worker.checkpoint.redis_store import RedisStore
    from executus_worker.client import Client
    from executus_worker.schedules.catalog import JobCatalog
    from executus_worker.schedules.store import FireOutcome, ScheduleStore
    from executus_worker.settings import Settings

    url, prefix, now = sys.argv[1], sys.argv[2], float(sys.argv[3])

    class DiesOnPublish:
        # Registration happened; the process dies before the message is sent.
        def publish(self, run_id, request_json, *, queue):
            os.kill(os.getpid(), signal.SIGKILL)

        def close(self):
            pass

    conn = redis.Redis.from_url(url)
    store = ScheduleStore(conn, key_prefix=prefix)
    runs = RedisStore(conn, key_prefix=prefix)
    settings = Settings(redis_url=url, key_prefix=prefix)
    client = Client(settings, store=runs, publisher=DiesOnPublish())
    ticker = Ticker(catalog=JobCatalog(store), store=store, runs=runs,
                    enqueuer=ClientEnqueuer(client), clock=lambda: now)
    ticker.tick()
    print("survived", flush=True)
    """
)


def test_a_beat_process_sigkilled_mid_enqueue_leaves_one_run_and_no_second_fire(
    world: World, redis_url: str
) -> None:
    world.add("j", "*/5 * * * *", overlap="allow")
    world.ticker().tick()
    now = (NOON + timedelta(seconds=1)).timestamp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTUS_")}
    result = subprocess.run(
        [sys.executable, "-c", KILLED_BEAT, redis_url, PREFIX, str(now)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == -9, result.stderr
    assert "survived" not in result.stdout

    for seconds in (2, 40, 41):  # other beats, retried ticks; past the dead attempt's lease
        world.clock.set(NOON + timedelta(seconds=seconds))
        world.ticker().tick()
    # Registered (status queued) but never published: the recovery sweep re-publishes such
    # runs after queued_timeout_s. What matters here: one record, no second publish.
    assert world.run_ids() == ["sched:j:2026-05-01T12:00:00Z"]
    assert world.publisher.sent == []
    assert world.store.state("j").last_outcome == "duplicate"  # the takeover found it
    world.clock.set(NOON + timedelta(minutes=5, seconds=1))
    world.ticker().tick()
    assert world.run_ids() == ["sched:j:2026-05-01T12:00:00Z", "sched:j:2026-05-01T12:05:00Z"]
    assert world.publisher.sent == ["sched:j:2026-05-01T12:05:00Z"]


# A real `celery beat` with one fault injected: it SIGKILLs itself at the enqueue, after its
# reservation is in Redis and before anything is registered or sent.
DIES_AT_ENQUEUE = textwrap.dedent(
    """
    import os, signal, sys
    from beat.enqueue import ClientEnqueuer

    def die(self, request, run_id):
        os.kill(os.getpid(), signal.SIGKILL)

    ClientEnqueuer.enqueue = die
    from celery.__main__ import main
    sys.argv = ["celery", *sys.argv[1:]]
    main()
    """
)
BEAT_ARGS = ["-A", "executus_worker.worker", "beat", "-S", "beat.scheduler:ExecutusScheduler",
             "--loglevel", "INFO"]  # fmt: skip


@pytest.mark.e2e
def test_a_celery_beat_sigkilled_between_reserve_and_enqueue_still_fires_exactly_once(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    prefix = "killed"
    store = ScheduleStore(redis_client, key_prefix=prefix)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    fire = format_fire(midnight)
    run_id = fire_run_id("daily", midnight)
    store.add_job(
        JobSpec.model_validate(
            {"name": "daily", "cron": "0 0 * * *", "catchup_window_s": 86_400,
             "overlap": "allow", "run": {"agent": "demo.counter"}}
        )
    )  # fmt: skip
    # Today's fire is reserved and due for whichever beat looks first.
    store.compare_and_set(
        "daily", expect={}, values={"schedule_key": "0 0 * * *|UTC", "next_fire": fire}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
    env |= {
        "EXECUTUS_REDIS_URL": redis_url,
        "EXECUTUS_KEY_PREFIX": prefix,
        "EXECUTUS_BEAT_ENQUEUE_TIMEOUT_S": "2",
        "PYTHONPATH": str(ROOT),
    }

    def start(argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip

    killed = start([sys.executable, "-c", DIES_AT_ENQUEUE, *BEAT_ARGS])
    try:
        killed_output, _ = killed.communicate(timeout=90)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert killed.returncode == -9, killed_output
    state = store.state("daily")
    assert (state.last_run_id, state.last_outcome, state.attempts) == (run_id, "reserved", 1)
    runs = RedisStore(redis_client, key_prefix=prefix)
    assert runs.get(run_id) is None
    assert redis_client.llen("executus") == 0

    # A replacement and a second beat: once the dead beat's attempt lease (2 s) has passed,
    # one of them retries the fire; the other never sends it again.
    beats = [start([sys.executable, "-m", "celery", *BEAT_ARGS]) for _ in range(2)]
    outputs: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if store.state("daily").last_outcome == "enqueued":
                break
            if any(p.poll() is not None for p in beats):
                break
            time.sleep(0.1)
        time.sleep(2.0)  # give the other beat the chance to (wrongly) send it again
    finally:
        for proc in beats:
            proc.send_signal(signal.SIGTERM)
        for proc in beats:
            try:
                outputs.append(proc.communicate(timeout=20)[0])
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs.append(proc.communicate()[0])
    joined = "\n".join(outputs)
    assert [r.run_id for r in runs.list_runs(limit=100)] == [run_id], joined
    assert redis_client.llen("executus") == 1, joined
    state = store.state("daily")
    assert (state.last_outcome, state.attempts, state.fires) == ("enqueued", 2, 1), joined
    assert joined.count(f"retrying {run_id}") == 1, joined
    assert joined.count(f"enqueued {run_id}") == 1, joined
    assert "Traceback" not in joined, joined
