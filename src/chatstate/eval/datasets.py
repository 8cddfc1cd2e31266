"""Offline loaders for the conversation data sets with evidence labels.

Each loader reads one data set from its folder under ``datasets_dir`` (by default
``../shared/datasets`` beside the repository, or ``$CHATSTATE_DATASETS``) and returns
:class:`Conversation` values: the utterances in order, as user and assistant messages,
and the questions asked at the end, each naming the utterances that hold its answer.
Nothing is downloaded and nothing is copied: a data set that is absent raises
:class:`DatasetMissing`, which the evaluation reports in one line and skips.

* **LoCoMo** (``locomo/*.json``; Maharana et al., ACL 2024; no license file, evaluation
  only): ``speaker_a`` speaks as the user, ``speaker_b`` as the assistant. A message's text
  is ``"<speaker>: <text>"``, plus ``" [shares a photo: <caption>]"`` when the turn shares
  one, and the first message of each session starts with ``"[<session date>] "`` so that
  temporal questions have their anchor in the log. Questions: ``qa`` entries with their
  ``evidence`` turn ids (malformed ids such as ``"D8:6; D9:17"`` are split; ids that name
  no turn are counted in :attr:`Conversation.unknown_evidence` and left out), category
  ``1`` multi-hop, ``2`` temporal, ``3`` open-domain, ``4`` single-hop, ``5`` adversarial.
* **lost_in_conversation** (``sharded_translation.json``, MIT): every shard is one user
  message; one question at the end asks for the whole result, and every shard is evidence.
* **multiwoz21_sample** (ConvLab-3 unified format, Apache-2.0 / MIT): user and system
  turns; for each slot of the final belief state, one question whose evidence is the
  first user turn whose ``state`` holds the final value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DATASETS",
    "LOCOMO_CATEGORIES",
    "Conversation",
    "DatasetMissing",
    "Question",
    "Utterance",
    "default_datasets_dir",
    "load",
    "load_locomo",
    "load_lost_in_conversation",
    "load_multiwoz",
]

LOCOMO_CATEGORIES = {
    "1": "multi-hop",
    "2": "temporal",
    "3": "open-domain",
    "4": "single-hop",
    "5": "adversarial",
}


class DatasetMissing(Exception):
    """The data set's folder or files are not there (nothing is downloaded)."""


@dataclass(frozen=True, slots=True)
class Utterance:
    id: str
    """The data set's own id of the turn (LoCoMo ``D3:5``)."""
    role: Literal["user", "assistant"]
    text: str
    """The message content as the engine stores it."""
    core: str = ""
    """What the speaker said, without the labels the loader added (speaker, date): the
    text whose facts the recall metric looks for. Empty: the same as ``text``."""

    @property
    def said(self) -> str:
        return self.core or self.text


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    evidence: tuple[str, ...]
    """Ids of the utterances that hold the answer."""
    category: str
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    dataset: str
    id: str
    utterances: tuple[Utterance, ...]
    questions: tuple[Question, ...]
    unknown_evidence: int = field(default=0)
    """Evidence ids in the data that name no utterance (left out of the questions)."""


def default_datasets_dir() -> Path:
    """``$CHATSTATE_DATASETS``, else ``../shared/datasets`` beside the repository root (a
    source checkout), else ``../shared/datasets`` from the working directory."""
    env = os.environ.get("CHATSTATE_DATASETS")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[3]  # src/chatstate/eval -> the repository
    beside = root.parent / "shared" / "datasets"
    return beside if beside.is_dir() else Path("..", "shared", "datasets")


def _folder(datasets_dir: Path, name: str, pattern: str) -> list[Path]:
    files = sorted((datasets_dir / name).glob(pattern))
    if not files:
        raise DatasetMissing(f"{name}: no {pattern} under {datasets_dir / name}")
    return files


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


_SESSION = re.compile(r"^session_(\d+)$")
_DIA_ID = re.compile(r"D\d+:\d+")


def load_locomo(datasets_dir: Path) -> list[Conversation]:
    out = []
    for path in _folder(datasets_dir, "locomo", "*.json"):
        raw = _read(path)
        names = {raw["speaker_a"]: "user", raw["speaker_b"]: "assistant"}
        sessions = sorted(
            (int(m.group(1)), key) for key in raw if (m := _SESSION.match(key)) and raw[key]
        )
        utterances: list[Utterance] = []
        for number, key in sessions:
            date = raw.get(f"session_{number}_date_time")
            for index, turn in enumerate(raw[key]):
                core = str(turn["text"])
                if turn.get("blip_caption"):
                    core += f" [shares a photo: {turn['blip_caption']}]"
                text = f"{turn['speaker']}: {core}"
                if index == 0 and date:
                    text = f"[{date}] {text}"
                role = names.get(turn["speaker"], "assistant")
                utterances.append(
                    Utterance(turn["dia_id"], role, text, core)  # type: ignore[arg-type]
                )
        known = {u.id for u in utterances}
        questions, unknown = [], 0
        for qa in raw.get("qa", []):
            ids = [i for e in qa.get("evidence", []) for i in _DIA_ID.findall(str(e))]
            unknown += sum(1 for i in ids if i not in known)
            evidence = tuple(dict.fromkeys(i for i in ids if i in known))
            if evidence:
                answer = qa.get("answer", qa.get("adversarial_answer"))
                questions.append(
                    Question(
                        qa["question"],
                        evidence,
                        str(qa["category"]),
                        None if answer is None else str(answer),
                    )
                )
        out.append(Conversation("locomo", path.stem, tuple(utterances), tuple(questions), unknown))
    return out


FINAL_ASK = "Now put it all together: give me the complete result for everything I sent."


def load_lost_in_conversation(datasets_dir: Path) -> list[Conversation]:
    out = []
    for path in _folder(datasets_dir, "lost_in_conversation", "sharded_*.json"):
        for sample in _read(path):
            utterances = tuple(
                Utterance(f"shard{s['shard_id']}", "user", str(s["shard"]))
                for s in sample["shards"]
            )
            ask = Question(FINAL_ASK, tuple(u.id for u in utterances), str(sample["task"]))
            out.append(
                Conversation("lost_in_conversation", str(sample["task_id"]), utterances, (ask,))
            )
    return out


def load_multiwoz(datasets_dir: Path) -> list[Conversation]:
    out = []
    for path in _folder(datasets_dir, "multiwoz21_sample", "*.json"):
        for dialogue in _read(path):
            utterances: list[Utterance] = []
            states: list[tuple[str, Mapping[str, Mapping[str, str]]]] = []
            for turn in dialogue["turns"]:
                uid = f"t{turn['utt_idx']}"
                user = turn["speaker"] == "user"
                text = str(turn["utterance"])
                utterances.append(Utterance(uid, "user" if user else "assistant", text))
                if user and turn.get("state"):
                    states.append((uid, turn["state"]))
            questions = list(_slot_questions(states))
            out.append(
                Conversation(
                    "multiwoz21_sample",
                    str(dialogue["dialogue_id"]),
                    tuple(utterances),
                    tuple(questions),
                )
            )
    return out


def _slot_questions(
    states: list[tuple[str, Mapping[str, Mapping[str, str]]]],
) -> Iterable[Question]:
    """One question per filled slot of the final state; evidence: the first user turn
    whose state holds the final value."""
    if not states:
        return
    final = states[-1][1]
    for domain, slots in sorted(final.items()):
        for slot, value in sorted(slots.items()):
            if not value:
                continue
            first = next(uid for uid, state in states if state.get(domain, {}).get(slot) == value)
            yield Question(f"What {slot} did I ask for the {domain}?", (first,), domain, value)


DATASETS: dict[str, Callable[[Path], list[Conversation]]] = {
    "locomo": load_locomo,
    "lost_in_conversation": load_lost_in_conversation,
    "multiwoz21_sample": load_multiwoz,
}


def load(name: str, datasets_dir: Path | None = None) -> list[Conversation]:
    """The conversations of data set ``name``; :class:`DatasetMissing` when absent."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](datasets_dir or default_datasets_dir())
