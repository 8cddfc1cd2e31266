"""LLM summariser: folds summaries through any OpenAI-compatible ``/chat/completions``.

Stdlib only (``urllib.request`` in a worker thread). Configuration comes from the
constructor or, for what it leaves out, the environment::

    CHATSTATE_LLM_BASE_URL   e.g. https://api.openai.com/v1 or http://localhost:11434/v1
    CHATSTATE_LLM_MODEL      e.g. gpt-4o-mini
    CHATSTATE_LLM_API_KEY    sent as "Authorization: Bearer ..."; optional for local servers
    CHATSTATE_LLM_TIMEOUT    seconds for the whole call (default 30)

The prompt insists that every fact of the previous summary is carried forward (a
"concise" prompt lost half the early facts in one team's measurement). After the answer
comes back, ``guard_facts`` checks that every number, id, email and link of the inputs'
fact lines is still in it, and appends the lines whose tokens went missing.

Failures (HTTP errors, time-outs, refused connections, an empty, cut-off or malformed
answer) raise :class:`SummaryUnavailable`, a :class:`~chatstate.errors.BackendUnavailable`,
so the caller keeps its previous summary; with ``fallback`` set (an
:class:`~chatstate.context.extractive.ExtractiveSummariser`, say) the fallback's summary
is returned instead and a warning logged. Messages never contain the API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal, cast
from urllib.parse import urlsplit

from chatstate.context.extractive import ExtractiveSummariser, fact_tokens
from chatstate.context.summaries import Summariser
from chatstate.context.text import event_text
from chatstate.errors import BackendUnavailable
from chatstate.llm_http import LLMCallFailed, post_chat
from chatstate.model import Event

__all__ = ["FailureReason", "LLMSummariser", "SummaryUnavailable", "render_events"]

logger = logging.getLogger(__name__)

FailureReason = Literal["http", "timeout", "connection", "empty", "truncated", "bad_response"]

SYSTEM_PROMPT = """\
You maintain the running summary of a conversation between a user and an assistant.
You get the previous summary and the messages that came after it. Write the updated summary.

Rules:
- Carry forward EVERY fact in the previous summary unless a new message explicitly
  corrects it; then keep the corrected value and say it was corrected.
- Add every new fact: names, numbers, ids, amounts, dates, emails, links, addresses,
  preferences, decisions, promises and commitments (who promised what, by when),
  and open questions.
- Copy numbers, ids, emails, links and names exactly, character for character.
- One fact per line, prefixed with who said it: "user: ..." or "assistant: ...".
- Stay under {max_tokens} tokens by shortening chit-chat and background, never by
  dropping a fact.
- Output only the summary lines: no preamble, no headings, no commentary."""


class SummaryUnavailable(BackendUnavailable):
    """The LLM endpoint gave no usable summary; keep the previous one.

    ``reason`` says why; ``http_status`` is set for HTTP errors.
    """

    code = "summary_unavailable"

    def __init__(
        self, message: str, *, reason: FailureReason, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason
        self.http_status = http_status


def render_events(events: Sequence[Event], *, max_chars: int = 4000) -> str:
    """The events as ``role: text`` lines, each clipped to ``max_chars``.

    Messages, tool calls (``assistant: name(arguments)``) and tool results are rendered;
    state, summary and marker events, and events with no text, are left out.
    """
    lines: list[str] = []
    for event in events:
        if event.kind not in ("message", "tool_call", "tool_result") or event.role is None:
            continue
        text = " ".join(event_text(event).split())
        if text:
            clipped = text if len(text) <= max_chars else text[:max_chars] + " [...]"
            lines.append(f"{event.role}: {clipped}")
    return "\n".join(lines)


class LLMSummariser:
    """A :class:`~chatstate.context.summaries.Summariser` that asks a chat model.

    ``max_tokens_param`` names the output limit in the request body (``max_tokens`` for
    most servers, ``max_completion_tokens`` for OpenAI's reasoning models, ``None`` to send
    none); the limit sent is ``max_tokens`` plus half again, so a model that runs a little
    long is not cut off mid-fact (a cut-off answer is treated as a failure).
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        fallback: Summariser | None = None,
        temperature: float | None = 0.0,
        guard_facts: bool = True,
        max_event_chars: int = 4000,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = "max_tokens",
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        url = base_url or environ.get("CHATSTATE_LLM_BASE_URL", "")
        chosen_model = model or environ.get("CHATSTATE_LLM_MODEL", "")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(
                f"LLMSummariser needs an http(s) base_url (or CHATSTATE_LLM_BASE_URL), got {url!r}"
            )
        if not chosen_model:
            raise ValueError("LLMSummariser needs a model (or CHATSTATE_LLM_MODEL)")
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model = chosen_model
        self._api_key = api_key or environ.get("CHATSTATE_LLM_API_KEY") or None
        self.timeout = timeout or float(environ.get("CHATSTATE_LLM_TIMEOUT") or 30.0)
        self._fallback = fallback
        self._temperature = temperature
        self._guard = ExtractiveSummariser() if guard_facts else None
        self._max_event_chars = max_event_chars
        self._max_tokens_param = max_tokens_param
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"LLMSummariser(endpoint={self.endpoint!r}, model={self.model!r})"

    async def summarise(
        self, *, previous: str | None, events: Sequence[Event], max_tokens: int
    ) -> str:
        body = self.request_body(previous=previous, events=events, max_tokens=max_tokens)
        try:
            answer = await asyncio.wait_for(
                asyncio.to_thread(self._post, body), timeout=self.timeout + 1.0
            )
        except TimeoutError:
            error = SummaryUnavailable(
                f"summary call to {self.endpoint} timed out after {self.timeout:g} s",
                reason="timeout",
            )
            return await self._fail(error, previous=previous, events=events, max_tokens=max_tokens)
        except SummaryUnavailable as error:
            return await self._fail(error, previous=previous, events=events, max_tokens=max_tokens)
        if self._guard is not None:
            answer = _with_missing_facts(self._guard, answer, previous=previous, events=events)
        return answer

    def request_body(
        self, *, previous: str | None, events: Sequence[Event], max_tokens: int
    ) -> dict[str, object]:
        """The JSON body sent for one fold (useful to log or inspect)."""
        rendered = render_events(events, max_chars=self._max_event_chars) or "(none)"
        user = (
            f"Previous summary:\n{(previous or '').strip() or '(none yet)'}\n\n"
            f"New messages:\n{rendered}\n\nWrite the updated summary."
        )
        body: dict[str, object] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT.format(max_tokens=max_tokens)},
                {"role": "user", "content": user},
            ],
        }
        if self._temperature is not None:
            body["temperature"] = self._temperature
        if self._max_tokens_param is not None:
            body[self._max_tokens_param] = max_tokens + max_tokens // 2 + 16
        return body

    async def _fail(
        self,
        error: SummaryUnavailable,
        *,
        previous: str | None,
        events: Sequence[Event],
        max_tokens: int,
    ) -> str:
        if self._fallback is None:
            raise error
        logger.warning("LLM summary failed (%s: %s); using the fallback", error.reason, error)
        return await self._fallback.summarise(
            previous=previous, events=events, max_tokens=max_tokens
        )

    def _post(self, body: dict[str, object]) -> str:
        """One blocking call (run in a thread); the answer text or SummaryUnavailable."""
        where = f"summary call to {self.endpoint}"
        try:
            raw = post_chat(
                self.endpoint,
                body,
                api_key=self._api_key,
                timeout=self.timeout,
                headers=self._headers,
                what="summary call",
            )
        except LLMCallFailed as exc:
            raise SummaryUnavailable(
                str(exc), reason=cast("FailureReason", exc.reason), http_status=exc.http_status
            ) from exc
        return _answer_text(raw, where)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _answer_text(raw: bytes, where: str) -> str:
    try:
        payload = json.loads(raw)
        choice = payload["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise SummaryUnavailable(
            f"{where} returned no chat completion: {raw[:200]!r}", reason="bad_response"
        ) from exc
    if finish == "length":
        raise SummaryUnavailable(f"{where} was cut off at the token limit", reason="truncated")
    if not isinstance(content, str) or not content.strip():
        raise SummaryUnavailable(f"{where} returned an empty summary", reason="empty")
    return content.strip()


def _with_missing_facts(
    guard: ExtractiveSummariser, answer: str, *, previous: str | None, events: Sequence[Event]
) -> str:
    """``answer`` plus the fact lines whose numbers, ids, emails or links it lost."""
    lowered = answer.lower()
    missing = [
        line
        for line in guard.fact_lines(previous=previous, events=events)
        if any(token.lower() not in lowered for token in fact_tokens(line))
    ]
    if missing:
        logger.info("LLM summary dropped %d fact lines; appending them verbatim", len(missing))
        answer = "\n".join([answer, *missing])
    return answer
