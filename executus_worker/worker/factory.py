"""``create_app(settings) -> Celery``: configuration, routing, tasks and the worker-signal hooks.

Celery's signals are process-global, so every hook first checks that the worker being started
runs *this* app (``worker_init`` records it); an app built in a test or a client never reacts
to anything. Nothing is connected to Redis here.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery, signals

from executus_worker.broker import run_queue
from executus_worker.core.jsoncap import loads_capped
from executus_worker.errors import ConfigError, PayloadError, StoreError
from executus_worker.observability import logs
from executus_worker.observability.process import Observability
from executus_worker.publish import TASK_RUN
from executus_worker.settings import Settings, redact_url
from executus_worker.worker import preclaim, transport
from executus_worker.worker.advertise import start_advertising
from executus_worker.worker.bootsteps import ControlCommand, drain_step, remote_control_step
from executus_worker.worker.messages import MAX_PAYLOAD_OPTION, run_id_of
from executus_worker.worker.recovery import RecoveryLoop
from executus_worker.worker.revoke import RevokeHook
from executus_worker.worker.runtime import Runtime
from executus_worker.worker.shutdown import ShutdownCoordinator
from executus_worker.worker.startup import check_state_layout, wait_for_services
from executus_worker.worker.tasks import register_tasks

log = logging.getLogger(__name__)

EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: a service the worker needs is not there
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: the worker refuses its configuration

# Celery lets these environment variables override app.conf silently (`celery -b URL` sets
# CELERY_BROKER_URL). A broker override is refused: recovery, beat and the client publish to
# EXECUTUS_BROKER_URL, so a worker consuming elsewhere would never see a recovered run.
_BROKER_ENV = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")
_OVERRIDING_ENV = ("CELERY_RESULT_BACKEND",)


def create_app(settings: Settings) -> Celery:
    """Raises ConfigError when a Celery broker override disagrees with the settings."""
    refuse_broker_overrides(settings, os.environ)
    app = Celery("executus_worker", set_as_current=False)
    app.conf.update(_config(settings))
    _warn_env_overrides()
    hooks = WorkerHooks(app, settings)
    register_tasks(app, hooks.runtime)
    hooks.connect()
    app.steps["worker"].add(drain_step(hooks.on_worker_stopping))
    app.steps["consumer"].add(remote_control_step(hooks.control_commands))
    return app


_HARDENED_TRANSPORT = "executus_worker.worker.transport:Transport"
_HARDENED_SENTINEL_TRANSPORT = "executus_worker.worker.transport:SentinelTransport"


def _transport_config(broker_url: str) -> dict[str, Any]:
    """The hardened transport (see transport.py) for redis:// and rediss:// brokers.

    kombu turns TLS on from the transport *name* 'rediss', which naming our transport
    replaces; so a rediss:// URL says it explicitly, with exactly what kombu would have used:
    the URL's ``ssl_*`` options when it has some, else kombu's default for a bare rediss://
    (encrypted, certificate not verified -- add ``?ssl_cert_reqs=required`` to verify).
    redis+socket:// names its transport in the URL, so it keeps the stock one.
    """
    parts = urlsplit(broker_url)
    if parts.scheme == "sentinel":
        return {"broker_transport": _HARDENED_SENTINEL_TRANSPORT}
    if parts.scheme not in {"redis", "rediss"}:
        return {}
    config: dict[str, Any] = {"broker_transport": _HARDENED_TRANSPORT}
    if parts.scheme == "rediss" and not any(k.startswith("ssl_") for k in parse_qs(parts.query)):
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_NONE}
    return config


def unverified_tls(broker_url: str) -> bool:
    """True for a rediss:// broker URL that does not ask for certificate checks."""
    parts = urlsplit(broker_url)
    reqs = parse_qs(parts.query).get("ssl_cert_reqs", ["none"])[-1].lower()
    return parts.scheme == "rediss" and reqs in {"none", "cert_none"}


def refuse_broker_overrides(settings: Settings, environ: Any) -> None:
    """A ``celery -b``/``CELERY_BROKER_URL`` equal to the settings' broker is harmless; any
    other one is refused with the setting to use instead."""
    wanted = settings.effective_broker_url
    for name in _BROKER_ENV:
        value = environ.get(name)
        if value and value != wanted:
            raise ConfigError(
                f"{name}={redact_url(value)} (what `celery -b` sets) differs from the broker "
                f"in the settings ({redact_url(wanted)}); recovery, beat and the client "
                f"publish there, so a worker on another broker would never see a recovered "
                f"run. Set EXECUTUS_BROKER_URL={redact_url(value)} instead and unset {name} "
                "(or drop -b)"
            )


def _broker_options(settings: Settings) -> dict[str, Any]:
    # Far above the longest run: past it a Redis broker redelivers a still-running message.
    # Crash recovery comes from our lease and sweep, not from redelivery.
    options: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_s,
        # Read by our Redis transport: a run message's body is capped before Celery decodes it.
        MAX_PAYLOAD_OPTION: settings.max_payload_bytes,
    }
    if settings.broker_is_amqp:
        # send_task returns only once RabbitMQ has taken the message (publisher confirms).
        options["confirm_publish"] = True
    if urlsplit(settings.effective_broker_url).scheme == "sentinel":
        # kombu's Sentinel transport asks the sentinels for this group's master; the
        # sentinels get short timeouts, so a dead one is passed over rather than waited on.
        options["master_name"] = settings.effective_broker_sentinel_master
        options["sentinel_kwargs"] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
    return options


def _config(settings: Settings) -> dict[str, Any]:
    queues = dict.fromkeys([settings.default_queue, *settings.tier_queues.values()])
    broker_url = settings.effective_broker_url
    quorum = settings.broker_quorum_queues
    config = _transport_config(broker_url) | {
        "broker_url": broker_url,
        # A worker that starts before Redis keeps retrying instead of exiting (Celery 6 will
        # stop retrying at startup unless told to).
        "broker_connection_retry_on_startup": True,
        # JSON only: pickle lets anyone who can write to the broker run code. Messages carry
        # a run id and a request, never a transcript.
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "result_accept_content": ["json"],
        # Ack after the task, requeue when the child dies: a killed child's run comes back
        # at once (its claim sorts out whether anyone still owns it).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # With acks_late, prefetched messages wait unacked behind a long run with their
        # visibility clock running; hold no more than there are slots.
        "worker_prefetch_multiplier": 1,
        # Never kill a running run because the broker connection dropped: Celery would SIGTERM
        # every prefork child mid-step and a healthy run would be booked as a crash (issue:
        # two Redis restarts made a run `dead`). The redelivered duplicate this allows is
        # harmless: its claim finds the live lease and drops it (research K1/K2).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": _broker_options(settings),
        # Our run record is the truth; no result backend round trips per run unless asked for.
        "task_ignore_result": True,
        # A plain `celery worker` serves every queue; a dedicated pool narrows it with -Q.
        "task_default_queue": settings.default_queue,
        # With quorum queues Celery turns global QoS off by itself (worker_detect_quorum_queues).
        "task_queues": [run_queue(name, quorum=quorum) for name in queues],
        "task_routes": (_Router(settings),),
    }
    return config | _result_config(settings)


def _result_config(settings: Settings) -> dict[str, Any]:
    """A result backend only when configured: then runs store their ending (reporting.py) for
    as long as the run record keeps its result."""
    if settings.result_backend is None:
        return {}
    return {
        "result_backend": settings.result_backend,
        "task_ignore_result": False,
        "result_expires": settings.result_ttl_s,
    }


def _warn_env_overrides() -> None:
    for name in _OVERRIDING_ENV:
        value = os.environ.get(name)
        if value:
            log.warning(
                "%s=%s is set and overrides the EXECUTUS_* broker settings; unset it",
                name,
                redact_url(value),
            )


class _Router:
    """Routes ``executus.run`` by the request's model_tier (settings.tier_queues)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> dict[str, str] | None:
        if name != TASK_RUN:
            return None
        raw = args[1] if isinstance(args, list | tuple) and len(args) > 1 else None
        try:
            # Capped: a request too big or too deep is the worker's to reject, not a
            # RecursionError in the sender's send_task.
            max_bytes = self._settings.max_payload_bytes
            request = (
                loads_capped(raw, what="run request", max_bytes=max_bytes)
                if isinstance(raw, str | bytes)
                else raw
            )
        except PayloadError:
            request = None
        tier = request.get("model_tier") if isinstance(request, dict) else None
        return {"queue": self._settings.queue_for(tier if isinstance(tier, str) else None)}


def broker_in_use(consumer: Any, settings: Settings) -> str:
    """The broker URL Celery is using (password masked; it includes any ``CELERY_BROKER_URL``)
    and the transport the consumer's connection runs on."""
    app = getattr(consumer, "app", None)
    url = app.conf.broker_url if app is not None else settings.effective_broker_url
    connection = getattr(consumer, "connection", None)
    driver = connection.transport.driver_type if connection is not None else "?"
    quorum = ", quorum queues" if settings.broker_quorum_queues else ""
    return f"{redact_url(url)} ({driver} transport{quorum})"


class WorkerHooks:
    """The worker-signal receivers. Inert until ``worker_init`` starts a worker of our app."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.shutdown = ShutdownCoordinator(grace_s=settings.shutdown_grace_s)
        self.observability = Observability(settings)
        self.runtime = Runtime(
            settings, drain=self.shutdown.drain, metrics=self.observability.metrics
        )
        self.recovery = RecoveryLoop(
            self.runtime.recovery,
            interval_s=settings.sweep_interval_s,
            drain=self.shutdown.drain,
        )
        self.revoke = RevokeHook(self.runtime.store, is_ours=self._is_our_task)
        self.active = False  # set in the MainProcess; prefork children inherit it
        self._log_tokens: dict[str, Any] = {}  # task id -> its run's log context

    def connect(self) -> None:
        # weak=False: the receivers are bound methods of this object, kept alive by Celery.
        signals.worker_init.connect(self.on_worker_init, weak=False)
        signals.worker_process_init.connect(self.on_process_init, weak=False)
        signals.worker_ready.connect(self.on_worker_ready, weak=False)
        signals.worker_shutting_down.connect(self.on_shutting_down, weak=False)
        signals.worker_shutdown.connect(self.on_worker_shutdown, weak=False)
        # Both fire wherever Celery sets up logging for this app (worker and beat).
        signals.after_setup_logger.connect(self.on_setup_logger, weak=False)
        signals.after_setup_task_logger.connect(self.on_setup_logger, weak=False)
        signals.task_prerun.connect(self.on_task_prerun, weak=False)
        signals.task_postrun.connect(self.on_task_postrun, weak=False)
        signals.task_revoked.connect(self.on_task_revoked, weak=False)

    def on_worker_init(self, sender: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        self.refuse_broken_agents_file()  # first: a configuration error needs no Redis
        try:
            wait_for_services(self.settings)
            # Run state written with another index partition count would be invisible here.
            check_state_layout(self.settings)
        except (ConfigError, StoreError) as exc:
            # Celery's logging is not set up yet; SystemExit passes Celery's signal dispatch
            # (which logs and swallows Exceptions) and ends `celery worker` with this code.
            wrong = isinstance(exc, ConfigError) and "EXECUTUS_REDIS_SHARDS" in str(exc)
            refusing = "refusing to start: " if wrong else ""
            print(f"executus worker: {refusing}{exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CONFIG if wrong else EXIT_UNAVAILABLE) from None
        self.active = True
        pool = _pool_name(sender)
        if pool in {"solo", "thread"}:
            # Tasks run in this process: a run's ending can settle its message (settle.py).
            transport.SETTLED.consuming()
        if pool == "solo":
            # The solo pool runs each message as it arrives, in the process that received it:
            # claim it in the same round trip (preclaim.py says why not prefork).
            preclaim.PRECLAIMS = self.runtime.preclaims()
        self.shutdown.on_worker_init(sender)
        # Before the pool forks: children inherit the metrics directory.
        self.observability.start_main(
            queues=_consumed_queues(sender, self.settings),
            active_index_keys=[p.active for p in self.settings.key_schema().partitions()],
        )

    def refuse_broken_agents_file(self) -> None:
        """Load the agents file before consuming anything; on a broken one, exit with a message
        naming the setting. A worker that started anyway would say ready, consume every run and
        fail each one with the same configuration error."""
        try:
            self.runtime.agents()
        except ConfigError as exc:
            # SystemExit, not an exception: Celery logs and ignores exceptions raised by signal
            # receivers. Logging is not set up yet at worker_init, hence stderr.
            message = (
                f"executus worker: refusing to start: EXECUTUS_AGENTS_FILE="
                f"{self.settings.agents_file}: {exc}"
            )
            print(message, file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CONFIG) from exc

    def on_process_init(self, **kwargs: Any) -> None:
        if self.active:
            self.shutdown.on_process_init()

    def on_worker_ready(self, sender: Any = None, **kwargs: Any) -> None:
        """MainProcess, broker connected: start the sweeps and the shutdown escalation."""
        if not self.active:
            return
        s = self.settings  # logged here: Celery's logging is not set up yet at worker_init
        log.info(
            "executus worker: redis=%s broker=%s prefix=%s lease=%.1fs sweep=%.1fs grace=%.1fs",
            redact_url(s.redis_url),
            broker_in_use(sender, s),
            s.key_prefix,
            s.lease_ttl_s,
            s.sweep_interval_s,
            s.shutdown_grace_s,
        )
        if unverified_tls(s.effective_broker_url):
            log.warning(
                "broker TLS without certificate verification; add ?ssl_cert_reqs=required "
                "(and ssl_ca_certs=...) to the broker URL to verify the server"
            )
        # A thread, not work in this handler: the handler blocks the consumer.
        self.recovery.start()
        self.shutdown.start_escalation()
        # Before "ready." is logged: a producer that waits for it finds this worker's agents.
        start_advertising(s, sender, self.runtime, self.shutdown.drain)
        self.observability.ready()

    def on_shutting_down(self, how: str = "Warm", **kwargs: Any) -> None:
        """Inside the MainProcess signal handler: flag and forward only, never block."""
        if self.active:
            self.shutdown.on_shutting_down(how)
            self.observability.draining()

    def on_worker_stopping(self) -> None:
        """Celery is stopping the worker for any reason (remote shutdown included)."""
        if self.active:
            self.shutdown.on_worker_stopping()
            self.observability.draining()

    def on_worker_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """MainProcess, after the pool stopped: close the metrics server, drop the files."""
        if self.active:
            self.observability.stop()

    def on_setup_logger(self, logger: Any = None, **kwargs: Any) -> None:
        if isinstance(logger, logging.Logger):
            logs.configure(logger, self.settings.log_format)

    def on_task_prerun(
        self, sender: Any = None, task_id: str | None = None, args: Any = None,
        kwargs: Any = None, **extra: Any,
    ) -> None:  # fmt: skip
        """Celery's own lines about the task ("succeeded in ...") name the run too."""
        if self.active and task_id and getattr(sender, "name", None) == TASK_RUN:
            token = logs.bind(run_id_of(args or (), kwargs or {}))
            if token is not None:
                self._log_tokens[task_id] = token

    def on_task_postrun(self, task_id: str | None = None, **extra: Any) -> None:
        token = self._log_tokens.pop(task_id, None) if task_id else None
        if token is not None:
            logs.unbind(token)

    def control_commands(self, celery: dict[str, ControlCommand]) -> dict[str, ControlCommand]:
        """Our remote-control commands, wrapping Celery's (consumer start, MainProcess)."""
        return self.revoke.commands(celery)

    def on_task_revoked(self, sender: Any = None, **kwargs: Any) -> None:
        """MainProcess: Celery dropped, expired or killed a delivery of one of our tasks."""
        if self.active:
            self.revoke.on_task_revoked(sender=sender, **kwargs)

    def _is_our_task(self, task: Any) -> bool:
        return getattr(task, "app", None) is self.app


def _consumed_queues(worker: Any, settings: Settings) -> list[str]:
    """The queues this worker consumes (``-Q``), else every queue of the app's settings."""
    selected = getattr(getattr(worker, "app", None), "amqp", None)
    queues = getattr(selected, "queues", None)
    names = sorted(queues.consume_from) if queues is not None and queues.consume_from else []
    return names or list(dict.fromkeys([settings.default_queue, *settings.tier_queues.values()]))


def _pool_name(worker: Any) -> str:
    """The pool's short name (solo, prefork, threads, ...) from a WorkController."""
    pool = getattr(worker, "pool_cls", None)
    module = getattr(pool, "__module__", "") if not isinstance(pool, str) else pool
    return str(module).rsplit(".", 1)[-1].rsplit(":", 1)[0]
