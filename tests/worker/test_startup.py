"""A worker that cannot reach Redis or the broker at start says which setting, then exits."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis
from kombu.exceptions import OperationalError

from executus_worker.embedded import free_port
from executus_worker.errors import ConfigError
from executus_worker.settings import Settings
from executus_worker.worker import startup
from executus_worker.worker.factory import EXIT_UNAVAILABLE
from executus_worker.worker.startup import Service, services, wait_for_services


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_redis_that_comes_up_within_the_timeout_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pings: list[str] = []

    def ping(service: startup.Service) -> None:
        pings.append(service.setting)
        if len(pings) < 4:
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(startup.Service, "ping", ping)
    fake = FakeTime()
    wait_for_services(Settings(startup_timeout_s=10), clock=fake.clock, sleep=fake.sleep)
    assert pings == ["EXECUTUS_REDIS_URL"] * 4
    assert fake.now == 3 * startup.RETRY_S


def test_the_error_names_the_setting_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ping(service: startup.Service) -> None:
        if service.setting == "EXECUTUS_BROKER_URL":
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(startup.Service, "ping", ping)
    fake = FakeTime()
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        broker_url="redis://user:hunter2@broker.example:6379/0",
        startup_timeout_s=5,
    )
    with pytest.raises(ConfigError) as caught:
        wait_for_services(settings, clock=fake.clock, sleep=fake.sleep)
    message = str(caught.value)
    assert message.startswith(
        "cannot reach the broker at EXECUTUS_BROKER_URL=redis://user:***@broker.example:6379/0"
    )
    assert "waited 5 s: Connection refused" in message
    assert "EXECUTUS_STARTUP_TIMEOUT_S" in message
    assert "hunter2" not in message
    assert fake.now <= 5


@pytest.mark.e2e
def test_a_real_worker_without_redis_exits_with_the_setting_named() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
    env |= {"EXECUTUS_REDIS_URL": url, "EXECUTUS_STARTUP_TIMEOUT_S": "2"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "executus_worker.worker", "worker",
         "-P", "solo", "-l", "WARNING"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert f"cannot reach Redis at EXECUTUS_REDIS_URL={url}" in done.stderr
    assert "waited 2 s" in done.stderr
    assert "Traceback" not in done.stderr
    # Bounded: the 2 s wait plus interpreter and Celery start-up, nowhere near Celery's own
    # hundred retries (a generous bound on a loaded box, not a speed assertion).
    assert time.monotonic() - started < 60


def test_the_broker_is_pinged_with_the_tls_the_worker_will_use() -> None:
    """A bare rediss:// broker is encrypted without certificate checks (kombu's default, see
    factory._transport_config); pinging it with redis-py's verifying default would fail."""
    bare = Settings(redis_url="redis://r:1/0", broker_url="rediss://b:2/0")
    explicit = Settings(
        redis_url="redis://r:1/0", broker_url="rediss://b:2/0?ssl_cert_reqs=required"
    )
    assert [s.options for s in startup.services(bare)] == [{}, {"ssl_cert_reqs": "none"}]
    assert [s.options for s in startup.services(explicit)] == [{}, {}]


def test_a_rabbitmq_broker_is_pinged_over_amqp_and_a_refused_login_is_named(
    rabbitmq_url: str,
) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", broker_url=rabbitmq_url)
    broker = services(settings)[1]
    broker.ping()
    wrong = Service(broker.setting, rabbitmq_url.replace("guest:guest", "guest:wrong"), broker.role)
    with pytest.raises(OperationalError, match="ACCESS_REFUSED"):
        wrong.ping()
