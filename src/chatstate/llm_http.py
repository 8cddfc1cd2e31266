"""One blocking POST to an OpenAI-compatible ``/chat/completions`` endpoint, stdlib only.

Shared by the LLM summariser and the LLM fact extractor (each runs it in a thread). A
failure becomes :class:`LLMCallFailed` with a ``reason`` (``http``, ``timeout``,
``connection``) that the caller turns into its own typed error; the API key never
appears in a message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping

__all__ = ["LLMCallFailed", "post_chat"]


class LLMCallFailed(Exception):
    def __init__(self, message: str, *, reason: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.http_status = http_status


def post_chat(
    endpoint: str,
    body: Mapping[str, object],
    *,
    api_key: str | None,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    what: str = "call",
) -> bytes:
    """POST ``body`` as JSON and return the raw answer, or raise :class:`LLMCallFailed`.

    ``endpoint`` must already be checked to be an ``http(s)`` URL.
    """
    sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"

    def redact(text: str) -> str:
        return text.replace(api_key, "***") if api_key else text

    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the caller
        endpoint, data=json.dumps(body).encode(), headers=sent, method="POST"
    )
    where = f"{what} to {endpoint}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        detail = redact(exc.read(500).decode("utf-8", "replace"))
        raise LLMCallFailed(
            f"{where} failed with HTTP {exc.code}: {detail}", reason="http", http_status=exc.code
        ) from exc
    except TimeoutError as exc:
        raise LLMCallFailed(f"{where} timed out after {timeout:g} s", reason="timeout") from exc
    except (urllib.error.URLError, OSError) as exc:
        cause = getattr(exc, "reason", exc)
        kind = "timeout" if isinstance(cause, TimeoutError) else "connection"
        raise LLMCallFailed(f"{where} failed: {redact(str(cause))}", reason=kind) from exc
