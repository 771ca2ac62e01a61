"""The worker advertises its agents at ready and refreshes until it drains."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from executus_worker.fleet.directory import AgentDirectory, WorkerAd
from executus_worker.settings import Settings
from executus_worker.worker.advertise import Advertiser, describe_worker
from executus_worker.worker.runtime import agent_registry


def consumer(hostname: str = "w1@host", queues: tuple[str, ...] = ("q-a", "q-b")) -> object:
    amqp = SimpleNamespace(queues=SimpleNamespace(consume_from=dict.fromkeys(queues)))
    return SimpleNamespace(hostname=hostname, app=SimpleNamespace(amqp=amqp))


def test_the_advertisement_names_the_node_its_queues_and_the_registrys_agents(
    tmp_path: Path,
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[agents]\n"my.agent" = "somewhere:factory"\n')
    settings = Settings.model_construct(agents_file=agents)
    ad = describe_worker(settings, consumer(), lambda: agent_registry(settings).names())
    assert ad.worker == "w1@host"
    assert ad.agents == ("demo.counter", "demo.phased", "my.agent")
    assert ad.queues == ("q-a", "q-b")
    assert ad.error is None


def test_a_bad_agents_file_is_advertised_as_an_error_with_no_agents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[agents."x"]\nmax_iterations = 0\n')
    settings = Settings.model_construct(agents_file=agents, model_name="m")
    ad = describe_worker(settings, consumer(), lambda: agent_registry(settings).names())
    assert ad.agents == ()
    assert ad.error is not None
    assert f"{agents}: agent 'x': max_iterations" in ad.error
    assert "this worker serves no agents" in caplog.text


class Counting:
    def __init__(self, fail: bool = False) -> None:
        self.ads: list[WorkerAd] = []
        self.fail = fail

    def advertise(self, ad: WorkerAd) -> None:
        if self.fail:
            raise redis.ConnectionError("Redis is away")
        self.ads.append(ad)


def test_it_advertises_at_once_then_every_interval_until_drained() -> None:
    sink = Counting()
    waits: list[float] = []
    drained = threading.Event()

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) > 2:
            drained.set()
            return True  # drained: stop refreshing
        return False

    ad = WorkerAd(worker="w", agents=("a",), queues=("q",))
    advertiser = Advertiser(lambda: sink, ad, interval_s=15, wait=wait)  # type: ignore[arg-type, return-value]
    advertiser.start()
    assert len(sink.ads) >= 1  # synchronously, before start() returns
    assert drained.wait(10)
    advertiser.join(10)
    assert len(sink.ads) == 3 and waits == [15, 15, 15]
    assert all(a.seen_at > 0 for a in sink.ads)


def test_a_failing_advertisement_is_logged_and_retried_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ad = WorkerAd(worker="w", agents=("a",), queues=("q",))
    advertiser = Advertiser(lambda: Counting(fail=True), ad, interval_s=1, wait=lambda s: True)  # type: ignore[arg-type, return-value]
    assert advertiser.advertise() is False
    advertiser.start()
    advertiser.join(10)
    assert "advertising this worker's agents failed: Redis is away" in caplog.text


@pytest.mark.redis
def test_it_lands_in_the_directory(redis_client: redis.Redis) -> None:
    directory = AgentDirectory(redis_client, key_prefix="adv", ttl_s=20)
    ad = WorkerAd(worker="w@h", agents=("a.b",), queues=("q",), pid=7)
    Advertiser(lambda: directory, ad, interval_s=5, wait=lambda s: True).advertise()
    [live] = directory.read().workers
    assert (live.worker, live.agents, live.pid) == ("w@h", ("a.b",), 7)
