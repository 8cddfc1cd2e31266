"""LLM extractor: facts and commitments from any OpenAI-compatible ``/chat/completions``.

Stdlib only (``urllib.request`` in a worker thread), configured like the LLM summariser::

    CHATSTATE_LLM_BASE_URL   e.g. https://api.openai.com/v1 or http://localhost:11434/v1
    CHATSTATE_LLM_MODEL      e.g. gpt-4o-mini
    CHATSTATE_LLM_API_KEY    sent as "Authorization: Bearer ..."; optional for local servers
    CHATSTATE_LLM_TIMEOUT    seconds per call (default 30)

The request carries the current state (facts, commitments with their ids, open questions
with theirs) and the new messages as ``[seq] role: text`` lines, and asks for JSON of
:data:`~chatstate.state.llm_schema.ANSWER_SCHEMA` (``response_format`` ``json_schema``,
or ``json_object`` / none for servers without structured output). An answer that fails
validation is retried once with the problem quoted back; a failed call is retried once.
After that the ``fallback`` extractor (the rules, by default) answers and a warning is
logged; with ``fallback=None`` :class:`~chatstate.state.changes.ExtractionUnavailable`
is raised. Messages never contain the API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import urlsplit

from chatstate.llm_http import LLMCallFailed, post_chat
from chatstate.model import Event, JSONValue
from chatstate.state.changes import (
    Change,
    ExtractionUnavailable,
    Extractor,
    commitments_of,
    facts_of,
)
from chatstate.state.llm_schema import ANSWER_SCHEMA, InvalidAnswer, parse_answer
from chatstate.state.rules import RuleExtractor, spoken_text

__all__ = ["LLMExtractor"]

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = """\
You keep the structured state of a conversation between a user and an assistant.
You get the current state and the new messages, each as "[seq] role: text".
Answer with one JSON object, nothing else:
- facts: durable facts the messages state (identifiers such as account, order or ticket
  numbers, emails, phone numbers, names, addresses, dates, amounts, preferences).
  key: a short snake_case name (reuse the existing key for the same thing); value: copied
  exactly; seq: the message that states it; correction: true when the user corrects an
  earlier value; confidence between 0 and 1.
- commitments: what the assistant promised, did or decided (refund issued, ticket
  escalated, order cancelled) and constraints the user set (topic "constraint");
  status "fulfilled" when done, "active" when promised; topic: one word or null.
- commitment_updates: existing commitment ids whose status the messages change.
- goal: the user's current goal in a few words, or null when unchanged.
- open_questions: user questions the assistant has not answered yet.
- resolved_questions: ids of open questions the new messages answer.
Use empty lists when there is nothing. Never invent values that no message states."""

_UNSET: Extractor = RuleExtractor()


class LLMExtractor:
    """An :class:`~chatstate.state.changes.Extractor` that asks a chat model."""

    name = "llm"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        fallback: Extractor | None = _UNSET,
        temperature: float | None = 0.0,
        response_format: Literal["json_schema", "json_object"] | None = "json_schema",
        max_event_chars: int = 2000,
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        url = base_url or environ.get("CHATSTATE_LLM_BASE_URL", "")
        chosen = model or environ.get("CHATSTATE_LLM_MODEL", "")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(
                f"LLMExtractor needs an http(s) base_url (or CHATSTATE_LLM_BASE_URL), got {url!r}"
            )
        if not chosen:
            raise ValueError("LLMExtractor needs a model (or CHATSTATE_LLM_MODEL)")
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model = chosen
        self._api_key = api_key or environ.get("CHATSTATE_LLM_API_KEY") or None
        self.timeout = timeout or float(environ.get("CHATSTATE_LLM_TIMEOUT") or 30.0)
        self.fallback = fallback
        self._temperature = temperature
        self._format = response_format
        self._max_chars = max_event_chars
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"LLMExtractor(endpoint={self.endpoint!r}, model={self.model!r})"

    async def extract(
        self, *, events: Sequence[Event], state: Mapping[str, JSONValue]
    ) -> list[Change]:
        messages = [e for e in events if e.role in ("user", "assistant") and spoken_text(e)]
        if not messages:
            return []
        body = self.request_body(events=messages, state=state)
        error = ExtractionUnavailable("extraction was not attempted", reason="invalid")
        for _attempt in range(2):
            try:
                answer = await asyncio.wait_for(
                    asyncio.to_thread(self._post, body), timeout=self.timeout + 1.0
                )
            except TimeoutError:
                error = ExtractionUnavailable(
                    f"extraction call to {self.endpoint} timed out", reason="timeout"
                )
                continue
            except ExtractionUnavailable as exc:
                error = exc
                continue
            try:
                return parse_answer(answer, events=messages, state=state)
            except InvalidAnswer as exc:
                error = ExtractionUnavailable(
                    f"extraction answer from {self.endpoint} was invalid: {exc}", reason="invalid"
                )
                body = _with_complaint(body, answer, str(exc))
        if self.fallback is None:
            raise error
        logger.warning("LLM extraction failed (%s: %s); using the fallback", error.reason, error)
        return await self.fallback.extract(events=events, state=state)

    def request_body(
        self, *, events: Sequence[Event], state: Mapping[str, JSONValue]
    ) -> dict[str, object]:
        """The JSON body sent for one extraction (useful to log or inspect)."""
        facts = {k: f.value for k, f in facts_of(state).items()}
        commitments = [
            {"id": c.id, "text": c.text, "status": c.status} for c in commitments_of(state)
        ]
        current = {
            "goal": state.get("goal"),
            "facts": facts,
            "commitments": commitments,
            "open_questions": state.get("open_questions", []),
        }
        lines = []
        for event in events:
            text = " ".join(spoken_text(event).split())
            if len(text) > self._max_chars:
                text = text[: self._max_chars] + " [...]"
            lines.append(f"[{event.seq}] {event.role}: {text}")
        user = (
            f"Current state:\n{json.dumps(current, ensure_ascii=False)}\n\n"
            f"New messages:\n" + "\n".join(lines)
        )
        body: dict[str, object] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
        }
        if self._temperature is not None:
            body["temperature"] = self._temperature
        if self._format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "session_state", "strict": True, "schema": ANSWER_SCHEMA},
            }
        elif self._format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _post(self, body: dict[str, object]) -> str:
        """One blocking call (run in a thread): the answer text or ExtractionUnavailable."""
        where = f"extraction call to {self.endpoint}"
        try:
            raw = post_chat(
                self.endpoint,
                body,
                api_key=self._api_key,
                timeout=self.timeout,
                headers=self._headers,
                what="extraction call",
            )
        except LLMCallFailed as exc:
            raise ExtractionUnavailable(
                str(exc), reason=exc.reason, http_status=exc.http_status
            ) from exc
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ExtractionUnavailable(
                f"{where} returned no chat completion", reason="bad_response"
            ) from exc
        if not isinstance(content, str):
            raise ExtractionUnavailable(f"{where} returned no content", reason="bad_response")
        return content

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


def _with_complaint(body: dict[str, object], answer: str, problem: str) -> dict[str, object]:
    """The request again, with the invalid answer and what was wrong with it."""
    messages = body.get("messages")
    base = list(messages[:2]) if isinstance(messages, list) else []
    complaint = (
        f"That answer was not valid: {problem}. Reply again with only the JSON object, "
        "following the schema exactly."
    )
    retry = dict(body)
    retry["messages"] = [
        *base,
        {"role": "assistant", "content": answer[:4000]},
        {"role": "user", "content": complaint},
    ]
    return retry
