"""Model adapters and tools: the OpenAI-compatible chat model, tools from Python functions,
and agents declared in the agents file (no code)."""

from executus_worker.models.endpoints import ModelEndpoint, resolve_endpoint
from executus_worker.models.openai_chat import OpenAIChatModel
from executus_worker.models.tools import FunctionTool, FunctionTools, tool
from executus_worker.models.transcript import pair_tool_results

__all__ = [
    "FunctionTool",
    "FunctionTools",
    "ModelEndpoint",
    "OpenAIChatModel",
    "pair_tool_results",
    "resolve_endpoint",
    "tool",
]
