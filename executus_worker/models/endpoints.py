"""Which endpoint and model a run talks to: a model tier resolved against the settings.

The flat ``model_*`` settings are the tier called ``default``; ``model_tiers`` names more tiers,
each overriding some of those fields. The API key is looked up in the environment variable the
tier names, when a model is built, and lives only in the SDK client: it is not part of
``ModelEndpoint`` (whose repr may be logged) and never reaches a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from executus_worker.errors import ConfigError
from executus_worker.settings import Settings

DEFAULT_TIER = "default"
_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelEndpoint:
    tier: str
    model: str
    base_url: str | None  # None: the SDK's default
    api_key_env: str
    timeout_s: float
    max_retries: int
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key from the environment, or None (local servers often need none)."""
        env = os.environ if environ is None else environ
        return env.get(self.api_key_env) or None

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_cost_per_mtok + output_tokens * self.output_cost_per_mtok
        ) / 1_000_000

    @property
    def where(self) -> str:
        """For messages and logs: tier, model and URL (never the key)."""
        return f"model {self.model!r} (tier {self.tier!r}) at {self.base_url or 'the SDK default'}"


def known_tiers(settings: Settings) -> list[str]:
    return sorted({DEFAULT_TIER, *settings.model_tiers})


def resolve_endpoint(
    settings: Settings, tier: str | None, model: str | None = None
) -> ModelEndpoint:
    """The endpoint of ``tier`` (None: the default tier); ``model`` overrides its model name.

    ConfigError names the tier and the settings to fix when the tier is unknown or no model
    name is configured anywhere.
    """
    name = tier or DEFAULT_TIER
    override = settings.model_tiers.get(name)
    if override is None and name != DEFAULT_TIER:
        raise ConfigError(
            f"model tier {name!r} is not configured (EXECUTUS_MODEL_TIERS); "
            f"known tiers: {', '.join(known_tiers(settings))}"
        )
    o = override
    model_name = model or (o.model if o and o.model else None) or settings.model_name
    if model_name is None:
        raise ConfigError(
            f'no model name for tier {name!r}: set EXECUTUS_MODEL_NAME, the tier\'s "model" '
            "in EXECUTUS_MODEL_TIERS, or `model` on the agent"
        )
    return ModelEndpoint(
        tier=name,
        model=model_name,
        base_url=(o.base_url if o and o.base_url else None) or settings.model_base_url,
        api_key_env=(o.api_key_env if o and o.api_key_env else None) or settings.model_api_key_env,
        timeout_s=_pick(o.timeout_s if o else None, settings.model_timeout_s),
        max_retries=_pick(o.max_retries if o else None, settings.model_max_retries),
        input_cost_per_mtok=_pick(
            o.input_cost_per_mtok if o else None, settings.model_input_cost_per_mtok
        ),
        output_cost_per_mtok=_pick(
            o.output_cost_per_mtok if o else None, settings.model_output_cost_per_mtok
        ),
    )


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value
