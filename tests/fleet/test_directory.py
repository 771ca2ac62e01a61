"""The agent directory on a real Redis: advertisements with a TTL, and the enqueue-time check."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from executus_worker.client import Client
from executus_worker.errors import UnknownAgentError
from executus_worker.fleet.directory import AgentDirectory, Directory, WorkerAd
from executus_worker.settings import Settings

pytestmark = pytest.mark.redis

PREFIX = "dirtest"


def ad(worker: str, *agents: str, queues: tuple[str, ...] = ("executus",)) -> WorkerAd:
    return WorkerAd(worker=worker, agents=agents, queues=queues, pid=1, seen_at=time.time())


@pytest.fixture
def directory(redis_client: redis.Redis) -> AgentDirectory:
    return AgentDirectory(redis_client, key_prefix=PREFIX, ttl_s=30)


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[Client]:
    with Client.from_url(redis_url, key_prefix=PREFIX) as c:
        yield c


# -- the directory ---------------------------------------------------------------------------


def test_advertised_workers_are_read_back_with_their_agents(directory: AgentDirectory) -> None:
    directory.advertise(ad("w1@a", "demo.counter", "x.agent"))
    directory.advertise(ad("w2@b", "x.agent", queues=("gpu",)))
    snapshot = directory.read()
    assert [w.worker for w in snapshot.workers] == ["w1@a", "w2@b"]
    assert {name: [w.worker for w in ws] for name, ws in snapshot.agents().items()} == {
        "demo.counter": ["w1@a"],
        "x.agent": ["w1@a", "w2@b"],
    }
    assert [w.worker for w in snapshot.serving("x.agent", "gpu")] == ["w2@b"]


def test_an_advertisement_lives_for_its_ttl_and_a_refresh_replaces_it(
    directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    directory.advertise(ad("w1@a", "old.agent"))
    ttl_ms = redis_client.pttl(directory.worker_key("w1@a"))
    assert 0 < ttl_ms <= 30_000
    assert redis_client.pttl(directory.index_key) > 0  # no key without a TTL
    directory.advertise(ad("w1@a", "new.agent"))
    assert [w.agents for w in directory.read().workers] == [("new.agent",)]


def test_a_worker_whose_key_expired_is_not_live(
    directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    directory.advertise(ad("gone@a", "a.agent"))
    directory.advertise(ad("here@b", "b.agent"))
    redis_client.delete(directory.worker_key("gone@a"))  # what its TTL does when it stops
    assert [w.worker for w in directory.read().workers] == ["here@b"]


def test_index_entries_older_than_many_ttls_are_pruned(
    directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    redis_client.zadd(directory.index_key, {"ancient@x": time.time() - 3600})
    directory.advertise(ad("w1@a", "a.agent"))
    assert redis_client.zrange(directory.index_key, 0, -1) == [b"w1@a"]


def test_an_unreadable_entry_is_ignored(
    directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    directory.advertise(ad("w1@a", "a.agent"))
    redis_client.zadd(directory.index_key, {"bad@x": time.time()})
    redis_client.set(directory.worker_key("bad@x"), b"{not json")
    assert [w.worker for w in directory.read().workers] == ["w1@a"]


def test_require_says_what_is_live_instead() -> None:
    with pytest.raises(UnknownAgentError, match="no worker has advertised itself"):
        Directory().require("a.agent", "executus")
    live = Directory(workers=(ad("w1@a", "b.agent", queues=("gpu",)),))
    with pytest.raises(UnknownAgentError, match=r"the live workers serve: b.agent; pass allow"):
        live.require("a.agent", "executus")
    with pytest.raises(UnknownAgentError, match="served only on queue\\(s\\) gpu, but this run"):
        live.require("b.agent", "executus")
    live.require("b.agent", "gpu")


# -- the check at enqueue --------------------------------------------------------------------


def test_enqueue_of_an_agent_no_live_worker_serves_is_refused_and_registers_nothing(
    client: Client, redis_client: redis.Redis
) -> None:
    with pytest.raises(UnknownAgentError, match=r"no live worker serves agent 'demo.counter'"):
        client.enqueue(agent="demo.counter", run_id="r-refused")
    assert redis_client.keys(f"{PREFIX}:{{run:*") == []
    assert redis_client.llen("executus") == 0


def test_enqueue_succeeds_once_a_worker_serves_the_agent(
    client: Client, directory: AgentDirectory
) -> None:
    directory.advertise(ad("w1@a", "demo.counter"))
    run_id = client.enqueue(agent="demo.counter")
    assert client.status(run_id).agent == "demo.counter"
    with pytest.raises(UnknownAgentError, match=r"the live workers serve: demo.counter"):
        client.enqueue(agent="demo.typo")


def test_the_override_queues_it_anyway(client: Client, redis_client: redis.Redis) -> None:
    run_id = client.enqueue(agent="not.deployed.yet", allow_unknown_agent=True)
    assert client.status(run_id).status.value == "queued"
    assert redis_client.llen("executus") == 1


def test_a_run_routed_to_a_queue_its_workers_do_not_consume_is_refused(
    redis_url: str, redis_client: redis.Redis, directory: AgentDirectory
) -> None:
    directory.advertise(ad("w1@a", "demo.counter", queues=("executus",)))
    settings = Settings.model_construct(tier_queues={"big": "executus.big"})
    with Client.from_url(redis_url, key_prefix=PREFIX, settings=settings) as c:
        c.enqueue(agent="demo.counter")
        with pytest.raises(UnknownAgentError, match=r"run goes to queue 'executus.big'"):
            c.enqueue(agent="demo.counter", model_tier="big")


def test_re_enqueueing_an_existing_run_stays_idempotent_when_its_agent_is_gone(
    client: Client, directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    directory.advertise(ad("w1@a", "demo.counter"))
    client.enqueue(agent="demo.counter", run_id="r-1")
    redis_client.delete(directory.worker_key("w1@a"))
    client._served.clear()  # what five seconds do to the client's memory of the answer
    assert client.submit({"agent": "demo.counter", "run_id": "r-1"}).created is False
    assert redis_client.llen("executus") == 1


def test_a_positive_answer_is_remembered_briefly_a_negative_one_never(
    client: Client, directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    with pytest.raises(UnknownAgentError):
        client.enqueue(agent="demo.counter")
    directory.advertise(ad("w1@a", "demo.counter"))
    client.enqueue(agent="demo.counter")  # seen at once: the refusal was not cached
    redis_client.delete(directory.worker_key("w1@a"))
    client.enqueue(agent="demo.counter")  # within the cache window: no second read


def test_the_check_can_be_switched_off_for_pools_scaled_to_zero(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = Settings.model_construct(check_agents_on_enqueue=False)
    with Client.from_url(redis_url, key_prefix=PREFIX, settings=settings) as c:
        assert c.enqueue(agent="anything.goes")


def test_adding_a_schedule_checks_its_agent(client: Client, directory: AgentDirectory) -> None:
    job = {"name": "nightly", "cron": "0 3 * * *", "run": {"agent": "demo.counter"}}
    with pytest.raises(UnknownAgentError):
        client.add_schedule(job)
    client.add_schedule(job, allow_unknown_agent=True)
    directory.advertise(ad("w1@a", "demo.counter"))
    client.add_schedule({**job, "name": "hourly"})
    assert {v.name for v in client.schedules()} == {"nightly", "hourly"}
