"""Settings: refused combinations fail at startup with a message naming the variables."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from executus_worker import cli
from executus_worker.client import Client
from executus_worker.errors import ConfigError
from executus_worker.settings import Settings


def test_the_defaults_keep_results_longer_than_the_visibility_timeout() -> None:
    settings = Settings()
    assert settings.result_ttl_s >= settings.visibility_timeout_s


def test_retention_shorter_than_the_visibility_timeout_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(result_ttl_s=3600, visibility_timeout_s=7200)
    message = str(caught.value)
    assert "EXECUTUS_RESULT_TTL_S (3600s) must be at least" in message
    assert "EXECUTUS_VISIBILITY_TIMEOUT_S (7200s)" in message


def test_retention_equal_to_the_visibility_timeout_is_accepted() -> None:
    assert Settings(result_ttl_s=600, visibility_timeout_s=600).result_ttl_s == 600


def test_the_environment_is_checked_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTUS_RESULT_TTL_S", "60")
    with pytest.raises(ValidationError, match="EXECUTUS_VISIBILITY_TIMEOUT_S"):
        Settings()
    monkeypatch.setenv("EXECUTUS_VISIBILITY_TIMEOUT_S", "60")
    assert Settings().result_ttl_s == 60


def test_the_cli_reports_it_as_one_line_naming_both_variables() -> None:
    env = {"EXECUTUS_RESULT_TTL_S": "60", "EXECUTUS_VISIBILITY_TIMEOUT_S": "3600"}
    result = CliRunner().invoke(cli.main, ["status", "some-run"], env=env)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: invalid settings: ")
    assert "EXECUTUS_RESULT_TTL_S (60s) must be at least EXECUTUS_VISIBILITY_TIMEOUT_S" in line
    assert "EXECUTUS_?" not in line


def test_a_client_is_refused_the_same_combination() -> None:
    settings = Settings.model_construct(result_ttl_s=60)
    with pytest.raises(ConfigError, match="EXECUTUS_RESULT_TTL_S"):
        Client.from_url("redis://127.0.0.1:1/0", settings=settings)


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@127.0.0.1:5672/vh", "amqps://h:5671//", "pyamqp://h//"]
)
def test_a_rabbitmq_broker_is_accepted_with_run_state_in_redis(url: str) -> None:
    settings = Settings(broker_url=url)
    assert settings.broker_is_amqp and settings.effective_broker_url == url
    assert not Settings().broker_is_amqp


def test_rabbitmq_as_the_run_state_store_is_refused_with_where_it_belongs() -> None:
    with pytest.raises(ValidationError, match="RabbitMQ goes in EXECUTUS_BROKER_URL"):
        Settings(redis_url="amqp://guest:guest@127.0.0.1:5672//")


def test_an_unknown_broker_scheme_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(ValidationError, match=r"unsupported broker URL scheme 'sqs'.*amqp"):
        Settings(broker_url="sqs://key:secret@")


def test_quorum_queues_need_a_rabbitmq_broker() -> None:
    with pytest.raises(ValidationError, match="QUORUM_QUEUES=true needs a RabbitMQ broker"):
        Settings(broker_quorum_queues=True)
    assert Settings(broker_url="amqp://h//", broker_quorum_queues=True).broker_quorum_queues
