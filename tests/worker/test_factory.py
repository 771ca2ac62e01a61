"""The app factory: configuration, routing, tasks, env-override warnings and the lazy app."""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
from types import SimpleNamespace

import pytest
from celery import Celery

from executus_worker.errors import ConfigError
from executus_worker.publish import TASK_RECOVER, TASK_RUN
from executus_worker.settings import Settings
from executus_worker.worker.factory import WorkerHooks, broker_in_use, create_app


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url="redis://127.0.0.1:1/0",
        visibility_timeout_s=7200,
        tier_queues={"fast": "executus-fast", "big": "executus-big"},
    )


def test_the_app_is_configured_for_durable_json_runs(settings: Settings) -> None:
    conf = create_app(settings).conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    # Runs are never killed on a broker blip: the claim fences the redelivered duplicate.
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.broker_transport_options == {
        "visibility_timeout": 7200,
        "executus_max_payload_bytes": settings.max_payload_bytes,
    }
    assert conf.broker_connection_retry_on_startup is True
    assert conf.task_ignore_result is True
    assert conf.task_default_queue == "executus"
    assert [q.name for q in conf.task_queues] == ["executus", "executus-fast", "executus-big"]


def test_both_tasks_are_registered_with_their_public_names(settings: Settings) -> None:
    app = create_app(settings)
    run = app.tasks[TASK_RUN]
    assert run.acks_late and run.reject_on_worker_lost and run.ignore_result
    assert TASK_RECOVER in app.tasks


@pytest.mark.parametrize(
    ("tier", "queue"), [("fast", "executus-fast"), ("unknown", "executus"), (None, "executus")]
)
def test_a_run_is_routed_by_its_model_tier(
    settings: Settings, tier: str | None, queue: str
) -> None:
    app = create_app(settings)
    request = json.dumps({"agent": "demo.counter", "model_tier": tier})
    route = app.amqp.router.route({}, TASK_RUN, args=("r1", request), kwargs={})
    assert route["queue"].name == queue


def test_a_request_nested_too_deeply_is_routed_to_the_default_queue(settings: Settings) -> None:
    """The sender's router never recurses: the worker records the run's rejection."""
    app = create_app(settings)
    request = '{"model_tier": "fast", "input": ' + "[" * 100_000 + "]" * 100_000 + "}"
    route = app.amqp.router.route({}, TASK_RUN, args=("r1", request), kwargs={})
    assert route["queue"].name == "executus"


def test_an_explicit_queue_wins_over_the_tier_route(settings: Settings) -> None:
    app = create_app(settings)
    request = json.dumps({"agent": "demo.counter", "model_tier": "fast"})
    route = app.amqp.router.route({"queue": "other"}, TASK_RUN, args=("r1", request), kwargs={})
    assert route["queue"].name == "other"


@pytest.mark.parametrize(
    "name", ["CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL"]
)
def test_a_celery_broker_override_is_refused_naming_the_setting_to_use(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # `celery -b URL` sets CELERY_BROKER_URL before it loads the app.
    monkeypatch.setenv(name, "amqp://user:hunter2@elsewhere:5672/vh")
    with pytest.raises(ConfigError) as refused:
        create_app(settings)
    text = str(refused.value)
    assert name in text and "EXECUTUS_BROKER_URL=amqp://user:***@elsewhere:5672/vh" in text
    assert "hunter2" not in text


def test_a_celery_broker_override_equal_to_the_settings_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/vh"
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", broker_url=url))
    assert app.conf.broker_url == url


def test_a_result_backend_override_is_warned_about_without_secrets(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://user:hunter2@elsewhere:6379/0")
    with caplog.at_level(logging.WARNING, logger="executus_worker.worker.factory"):
        create_app(settings)
    assert "CELERY_RESULT_BACKEND" in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("quorum", [False, True])
def test_a_rabbitmq_broker_uses_the_stock_amqp_transport_with_confirms(quorum: bool) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        broker_url="amqp://guest:guest@127.0.0.1:5672/vh",
        broker_quorum_queues=quorum,
    )
    app = create_app(settings)
    with app.connection_for_write() as conn:  # built, never connected
        assert conn.transport.driver_type == "amqp"
    assert app.conf.broker_transport_options["confirm_publish"] is True
    (queue,) = app.conf.task_queues
    assert queue.name == queue.routing_key == queue.exchange.name == "executus"
    assert queue.queue_arguments == ({"x-queue-type": "quorum"} if quorum else None)


@pytest.mark.parametrize(
    ("broker_url", "shown"),
    [
        ("amqp://guest:s3cret@rabbit:5672/vh", "amqp://guest:***@rabbit:5672/vh (amqp transport)"),
        (None, "redis://127.0.0.1:1/0 (redis transport)"),
    ],
)
def test_the_startup_log_names_the_broker_the_consumer_connected_to(
    broker_url: str | None, shown: str
) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", broker_url=broker_url)
    app = create_app(settings)
    consumer = SimpleNamespace(app=app, connection=app.connection_for_write())  # not connected
    assert broker_in_use(consumer, settings) == shown


def test_hooks_ignore_a_worker_of_another_app(settings: Settings) -> None:
    hooks = WorkerHooks(create_app(settings), settings)
    hooks.on_worker_init(sender=SimpleNamespace(app=Celery(set_as_current=False)))
    assert not hooks.active
    hooks.on_shutting_down(how="Warm")
    hooks.on_worker_stopping()
    assert not hooks.shutdown.drain.requested()


def test_every_worker_stop_reaches_the_drain_through_a_bootstep(settings: Settings) -> None:
    """Celery closes each worker step before it joins the pool, on any warm stop."""
    app = create_app(settings)
    names = {step.name for step in app.steps["worker"]}
    assert any(name.endswith("DrainOnStop") for name in names)


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_worker_package_builds_no_app_and_starts_nothing() -> None:
    out = _python(
        "import threading, executus_worker.worker as w, executus_worker.worker.tasks, "
        "executus_worker.worker.recovery, executus_worker.worker.runtime;"
        "print('app' in vars(w), threading.active_count())"
    )
    assert out == "False 1"


def test_the_lazy_app_is_what_celery_dash_a_finds() -> None:
    out = _python(
        "from celery.app.utils import find_app; import executus_worker.worker as w;"
        "a = find_app('executus_worker.worker'); print(type(a).__name__, a is w.app,"
        " a.conf.task_default_queue)"
    )
    assert out == "Celery True executus"


HARDENED = "executus_worker.worker.transport:Transport"


@pytest.mark.parametrize(
    ("broker_url", "transport", "tls"),
    [
        ("redis://h:6379/0", HARDENED, False),
        # kombu's own default for a bare rediss:// URL: encrypted, certificate not checked.
        ("rediss://h:6380/0", HARDENED, {"ssl_cert_reqs": ssl.CERT_NONE}),
        (
            "rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem",
            HARDENED,
            {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"},
        ),
        ("redis+socket:///run/redis.sock", "redis", False),
    ],
    ids=["redis", "rediss-bare", "rediss-verified", "redis+socket"],
)
def test_the_broker_connection_keeps_its_tls_options_on_the_hardened_transport(
    broker_url: str, transport: str, tls: object
) -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", broker_url=broker_url))
    with app.connection_for_write() as conn:  # built, never connected
        assert conn.transport_cls == transport
        assert (conn.ssl or False) == tls
