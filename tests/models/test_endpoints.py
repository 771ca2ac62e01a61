"""Model tiers: the flat settings are the default tier; named tiers override some fields."""

from __future__ import annotations

import pytest

from executus_worker.errors import ConfigError
from executus_worker.models.endpoints import resolve_endpoint
from executus_worker.settings import ModelTier, Settings


def settings(**fields: object) -> Settings:
    base = {"model_name": "base-model", "model_base_url": "http://127.0.0.1:9/v1"}
    return Settings.model_construct(**(Settings.model_construct().model_dump() | base | fields))


def test_the_default_tier_is_the_flat_settings() -> None:
    endpoint = resolve_endpoint(settings(model_timeout_s=12.0), None)
    assert (endpoint.tier, endpoint.model, endpoint.base_url) == (
        "default",
        "base-model",
        "http://127.0.0.1:9/v1",
    )
    assert endpoint.timeout_s == 12.0
    assert endpoint.api_key_env == "OPENAI_API_KEY"


def test_a_named_tier_overrides_only_what_it_sets() -> None:
    tiers = {"fast": ModelTier(model="small", api_key_env="FAST_KEY", max_retries=0)}
    endpoint = resolve_endpoint(settings(model_tiers=tiers), "fast")
    assert (endpoint.model, endpoint.api_key_env, endpoint.max_retries) == ("small", "FAST_KEY", 0)
    assert endpoint.base_url == "http://127.0.0.1:9/v1"  # inherited


def test_an_agents_model_overrides_the_tiers_model() -> None:
    assert resolve_endpoint(settings(), None, "gpt-x").model == "gpt-x"


def test_an_unknown_tier_names_the_known_ones() -> None:
    tiers = {"fast": ModelTier(model="small")}
    with pytest.raises(ConfigError, match=r"tier 'huge' is not configured .* default, fast"):
        resolve_endpoint(settings(model_tiers=tiers), "huge")


def test_no_model_name_anywhere_says_where_to_set_one() -> None:
    with pytest.raises(ConfigError, match="no model name for tier 'default': set EXECUTUS_MODEL"):
        resolve_endpoint(settings(model_name=None), None)


def test_tiers_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTUS_MODEL_TIERS", '{"fast": {"model": "small", "timeout_s": 5}}')
    monkeypatch.setenv("EXECUTUS_MODEL_NAME", "big")
    loaded = Settings()
    assert resolve_endpoint(loaded, "fast").timeout_s == 5.0
    assert resolve_endpoint(loaded, None).model == "big"


def test_the_key_is_read_from_the_named_variable_only_when_asked() -> None:
    endpoint = resolve_endpoint(settings(model_api_key_env="MY_KEY"), None)
    assert endpoint.api_key({"MY_KEY": "k1", "OPENAI_API_KEY": "other"}) == "k1"
    assert endpoint.api_key({}) is None
    assert "k1" not in repr(endpoint)
