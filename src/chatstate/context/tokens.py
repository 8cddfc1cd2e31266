"""Token counting that works offline, and the context windows of known models.

Exact counts use the BPE encodings that ship inside the ``bpe-openai`` package
(``o200k_base``, ``cl100k_base``): nothing is downloaded at run time. Models whose
tokenizer we do not ship get :class:`EstimateCounter`, which over-estimates on purpose
(``ceil(utf8_bytes / 3)``; English BPE averages about 4 bytes per token) so a budget
computed with it is not exceeded by the real tokenizer in practice.

A chat message costs its text plus :data:`MESSAGE_OVERHEAD` tokens (role and separators);
a reply is primed with :data:`REPLY_OVERHEAD` more. These match OpenAI's accounting for
current chat models.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

from chatstate.errors import ValidationError

__all__ = [
    "MESSAGE_OVERHEAD",
    "REPLY_OVERHEAD",
    "BPECounter",
    "EstimateCounter",
    "ModelInfo",
    "TokenCounter",
    "counter_for",
    "model_info",
    "register_model",
]

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3


@runtime_checkable
class TokenCounter(Protocol):
    @property
    def name(self) -> str:
        """The encoding's name; counts from different names are not comparable."""
        ...

    def count(self, text: str) -> int: ...


class EstimateCounter:
    """Offline fallback for unknown tokenizers: ``ceil(utf8_bytes / 3)``, never less."""

    name = "estimate"

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / 3)


class BPECounter:
    """Exact counts for an OpenAI encoding shipped inside the ``bpe-openai`` package."""

    def __init__(self, encoding: str) -> None:
        with warnings.catch_warnings():
            # bpe-openai 0.1.x reads its data with a deprecated importlib.resources call.
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai  # type: ignore[import-untyped]  # noqa: PLC0415 - lazy, once

            self.name = encoding
            self._encode: Callable[[str], list[int]] = bpe_openai.get_encoding(encoding).encode

    def count(self, text: str) -> int:
        return len(self._encode(text)) if text else 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    window: int
    """Context window in tokens (input and output together)."""
    encoding: str | None
    """``o200k_base``, ``cl100k_base``, or ``None`` for the estimator."""
    max_output: int = 4096
    """Tokens reserved for the reply when the caller gives no budget."""


# Longest matching prefix wins. Extend with register_model().
_MODELS: dict[str, ModelInfo] = {
    "gpt-5": ModelInfo(400_000, "o200k_base", 16_384),
    "gpt-4.1": ModelInfo(1_047_576, "o200k_base", 16_384),
    "gpt-4o": ModelInfo(128_000, "o200k_base", 16_384),
    "gpt-4-turbo": ModelInfo(128_000, "cl100k_base"),
    "gpt-4": ModelInfo(8_192, "cl100k_base"),
    "gpt-3.5-turbo": ModelInfo(16_385, "cl100k_base"),
    "o1": ModelInfo(200_000, "o200k_base", 32_768),
    "o3": ModelInfo(200_000, "o200k_base", 32_768),
    "o4-mini": ModelInfo(200_000, "o200k_base", 32_768),
    "claude": ModelInfo(200_000, None, 8_192),
    "gemini": ModelInfo(1_000_000, None, 8_192),
    "llama": ModelInfo(128_000, None),
    "mistral": ModelInfo(128_000, None),
    "qwen": ModelInfo(128_000, None),
}
DEFAULT_MODEL = ModelInfo(8_192, None)


def register_model(prefix: str, info: ModelInfo) -> None:
    """Teach chatstate a model family: names starting with ``prefix`` use ``info``."""
    if not prefix or info.window <= 0:
        raise ValidationError("a model needs a name prefix and a positive window")
    _MODELS[prefix] = info
    counter_for.cache_clear()


def model_info(model: str) -> ModelInfo:
    """What chatstate knows of ``model``; unknown models get an 8k window and the estimator."""
    best = ""
    for prefix in _MODELS:
        if model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return _MODELS[best] if best else DEFAULT_MODEL


@lru_cache(maxsize=32)
def counter_for(model: str) -> TokenCounter:
    """The counter for ``model``: exact when its encoding ships with bpe-openai."""
    encoding = model_info(model).encoding
    if encoding is None:
        return EstimateCounter()
    return _bpe(encoding)


@lru_cache(maxsize=4)
def _bpe(encoding: str) -> TokenCounter:
    try:
        return BPECounter(encoding)
    except ImportError:
        log.warning("bpe-openai is not installed; estimating %s token counts", encoding)
        return EstimateCounter()
