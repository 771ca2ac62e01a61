"""What every CLI command shares: settings built when a command starts, errors as messages,
and Ctrl-C as a request to stop rather than an exception in the middle of cleaning up."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click
import redis
from pydantic import ValidationError

from executus_worker.client import Client
from executus_worker.errors import ExecutusError, PublishError
from executus_worker.settings import Settings, redact_url


class ErrorsAsMessages(click.Group):
    """Expected failures end as ``Error: <message>`` and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PublishError as exc:
            raise click.ClickException(f"{exc} [broker: {_where('broker')}]") from exc
        except ExecutusError as exc:
            cause = exc.__cause__
            if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
                # The store wraps Redis errors with the command that failed; a user needs
                # to know which setting points at the Redis that is not there.
                message = f"cannot reach Redis at {_where('redis')}: {cause}"
                raise click.ClickException(message) from exc
            raise click.ClickException(str(exc)) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise click.ClickException(f"cannot reach Redis at {_where('redis')}: {exc}") from exc
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis at {_where('redis')}: {exc}") from exc
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc


def _where(which: str) -> str:
    """``EXECUTUS_REDIS_URL=redis://...`` -- the setting to fix, with its value redacted."""
    try:
        settings = Settings()
    except ValidationError:
        return "EXECUTUS_REDIS_URL"  # already reported when the command loaded its settings
    if which == "broker" and settings.broker_url is not None:
        return f"EXECUTUS_BROKER_URL={redact_url(settings.broker_url)}"
    return f"EXECUTUS_REDIS_URL={redact_url(settings.redis_url)}"


json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


def load_settings() -> Settings:
    """Settings from the environment; a bad value is reported without echoing it (secrets)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            # A check across fields has no location; its message names the variables.
            f"EXECUTUS_{str(err['loc'][0]).upper()}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise click.ClickException(f"invalid settings: {problems}") from None


def make_client() -> Client:
    return Client(load_settings())


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set an event instead of raising mid-cleanup; handlers restored after."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
