"""``chatstate state``, ``chatstate health`` and ``chatstate eval detectors``.

* ``state SESSION [--branch B]``: the branch's facts (with the event that set each and the
  values corrections replaced), commitments, goal and open questions (each branch has its
  own state document; default main). A session whose state was
  never recorded shows what the offline extractor reads from its log, marked as not
  stored; ``--sync`` records it (appends ``state`` events and writes the document).
* ``health SESSION``: the health report: score, flags with their detector and evidence
  seqs, counts per detector; ``--budget`` enables context pressure from the log.
* ``eval detectors``: precision and recall per detector on the labelled cases
  (``evals/detectors/cases.jsonl``; ``--cases`` or ``$CHATSTATE_DETECTOR_CASES`` elsewhere).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from chatstate.cli._commands import Context, opened, print_json
from chatstate.cli._errors import UsageError
from chatstate.errors import ValidationError
from chatstate.health import analyse
from chatstate.health.evaluate import evaluate, load_cases, render_table
from chatstate.health.report import HealthReport
from chatstate.model import Event, JSONValue
from chatstate.state import StateKeeper, commitments_of, facts_of, rebuild_state
from chatstate.state.fold import apply_all
from chatstate.state.rules import RuleExtractor
from chatstate.store.protocol import Store

__all__ = ["add_parsers", "eval_detectors", "health", "state"]

Register = Callable[..., argparse.ArgumentParser]
CASES_ENV = "CHATSTATE_DETECTOR_CASES"
_PAGE = 1000
_PROGRESS_EVERY = 10_000


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    eval_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Register,
) -> None:
    """Register ``state`` and ``health`` on ``sub`` and ``detectors`` on the eval group."""
    st = command(sub, "state", state, "a session's facts, commitments, goal and open questions")
    st.add_argument("id", help="session id")
    st.add_argument(
        "--sync", action="store_true", help="extract from new events and record the state first"
    )
    st.add_argument(
        "--branch", default="main", help="branch whose state document to show (default main)"
    )
    hl = command(sub, "health", health, "a session's health report: flags with evidence seqs")
    hl.add_argument("id", help="session id")
    hl.add_argument("--branch", default="main", help="branch (default main)")
    hl.add_argument("--budget", type=int, help="context budget, for context pressure from the log")
    hl.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="list at most the newest N flags (and, with --json, turns); default 50, 0 for all",
    )
    ev = command(eval_sub, "detectors", eval_detectors, "precision and recall of the detectors")
    ev.add_argument(
        "--cases", type=Path, help=f"cases file (default: ${CASES_ENV}, else the repo's)"
    )
    ev.add_argument("--split", choices=("all", "dev", "test"), default="all")
    ev.add_argument("--errors", action="store_true", help="list every false positive and negative")


async def _events(
    store: Store, tenant: str, session_id: str, branch: str, ctx: Context | None = None
) -> list[Event]:
    """Every event of the branch; with ``ctx``, progress on stderr for a long log."""
    out: list[Event] = []
    after = 0
    while page := await store.read(
        tenant_id=tenant, session_id=session_id, branch=branch, after_seq=after, limit=_PAGE
    ):
        out += page
        after = page[-1].seq
        if ctx is not None and len(out) % _PROGRESS_EVERY == 0:
            ctx.err.write(f"read {len(out):,} events\n")
            ctx.err.flush()
        if len(page) < _PAGE:
            break
    return out


def _sync_progress(ctx: Context, head: int) -> Callable[[int], None]:
    """Progress of ``state --sync`` on stderr: a line per 10,000 messages or so."""
    shown = [0]

    def report(seq: int) -> None:
        if head >= _PROGRESS_EVERY and seq - shown[0] >= _PROGRESS_EVERY:
            shown[0] = seq
            ctx.err.write(f"state: extracted up to #{seq:,} of {head:,}\n")
            ctx.err.flush()

    return report


async def state(ctx: Context, args: argparse.Namespace) -> int:
    branch = args.branch
    async with opened(ctx) as store:
        if args.sync:
            last = await store.read_last(
                tenant_id=ctx.tenant, session_id=args.id, branch=branch, n=1
            )
            head = last[-1].seq if last else 0
            progress = _sync_progress(ctx, head)
            keeper = StateKeeper(store, branch=branch)
            await keeper.sync(args.id, tenant_id=ctx.tenant, progress=progress)
        doc = await store.get_state(tenant_id=ctx.tenant, session_id=args.id, branch=branch)
        data: Mapping[str, JSONValue] = doc.data
        stored = doc.version > 0
        if not stored:  # never recorded: show what the rules read, without writing
            events = await _events(store, ctx.tenant, args.id, branch)
            base = rebuild_state(events)
            data = apply_all(base, RuleExtractor().changes(events, base))
    public = {k: v for k, v in data.items() if not k.startswith("_")}
    if ctx.as_json:
        body: dict[str, JSONValue] = {"session": args.id, "branch": branch}
        body |= {"version": doc.version, "stored": stored, "state": public}
        print_json(ctx, body)
        return 0
    ctx.out.write(render_state_text(args.id, doc.version, stored, public, branch=branch))
    return 0


def render_state_text(
    session_id: str,
    version: int,
    stored: bool,
    data: Mapping[str, JSONValue],
    *,
    branch: str = "main",
) -> str:
    where = f"version {version}" if stored else "not stored: read from the log (--sync records it)"
    of = session_id if branch == "main" else f"{session_id} branch {branch}"
    lines = [f"session {of}: state {where}", ""]
    goal = data.get("goal")
    if isinstance(goal, str) and goal:
        lines += [f"goal: {goal}", ""]
    facts = facts_of(data)
    lines.append(f"facts ({len(facts)})")
    for key, fact in sorted(facts.items(), key=lambda kv: (not kv[1].pinned, kv[0])):
        pin = " pinned" if fact.pinned else ""
        origin = f"#{fact.seq} {fact.role or 'api'}{pin}, confidence {fact.confidence:.2f}"
        lines.append(f"  {key:<22} {fact.value}  ({origin})")
        for old in reversed(fact.history):
            lines.append(f"  {'':<22} was {old.value} until #{old.replaced_seq} ({old.reason})")
    commitments = commitments_of(data)
    lines += ["", f"commitments ({len(commitments)})"]
    for c in commitments:
        topic = c.topic or "-"
        lines.append(
            f"  {c.id:<8} {c.status:<9} {topic:<12} {c.text}  (#{c.seq}, {c.role or 'api'})"
        )
    questions = data.get("open_questions")
    open_q = [q for q in questions if isinstance(q, dict)] if isinstance(questions, list) else []
    lines += ["", f"open questions ({len(open_q)})"]
    lines += [f"  {q.get('id')!s:<8} {q.get('text')}  (#{q.get('seq')})" for q in open_q]
    return "\n".join(lines) + "\n"


async def health(ctx: Context, args: argparse.Namespace) -> int:
    if args.budget is not None and args.budget <= 0:
        raise UsageError("--budget must be a positive number of tokens")
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or a positive number of flags")
    async with opened(ctx) as store:
        await store.get_session(tenant_id=ctx.tenant, session_id=args.id)  # 404 when absent
        events = await _events(store, ctx.tenant, args.id, args.branch, ctx)
    if len(events) >= _PROGRESS_EVERY:
        ctx.err.write(f"health: analysing {len(events):,} events\n")
        ctx.err.flush()
    report = analyse(events, budget=args.budget)
    limit = args.limit or None
    if ctx.as_json:
        body = report.to_dict()
        for name in ("flags", "turns"):  # the newest --limit of each; counts cover all
            rows = body.get(name)
            if limit is not None and isinstance(rows, list) and len(rows) > limit:
                body[name] = rows[-limit:]
                body[f"{name}_omitted"] = len(rows) - limit
        print_json(ctx, {"session": args.id, "branch": args.branch, **body})
        return 0
    ctx.out.write(render_health_text(args.id, report, limit=limit))
    return 0


def render_health_text(session_id: str, report: HealthReport, *, limit: int | None = None) -> str:
    verdict = "healthy" if not report.flags else f"{len(report.flags)} flags"
    lines = [
        f"session {session_id}: score {report.score:.2f} ({verdict}), "
        f"{len(report.turns)} messages, {report.summaries} summaries",
        "",
        f"{'detector':<22} {'flags':>5}",
    ]
    lines += [f"{name:<22} {report.counts.get(name, 0):>5}" for name in report.detectors]
    if report.flags:
        shown = report.flags if limit is None else report.flags[-limit:]
        omitted = len(report.flags) - len(shown)
        lines += [
            "",
            "flags" + (f" (newest {len(shown)}; {omitted} older: --limit 0)" if omitted else ""),
        ]
        for flag in shown:
            evidence = ", ".join(f"#{s}" for s in flag.evidence)
            lines.append(f"  #{flag.seq:<5} {flag.detector:<21} evidence {evidence}")
            lines.append(f"         {flag.detail}")
    return "\n".join(lines) + "\n"


def _cases_path(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit else []
    if not candidates and os.environ.get(CASES_ENV):
        candidates.append(Path(os.environ[CASES_ENV]))
    if not candidates:
        relative = Path("evals/detectors/cases.jsonl")
        checkout = Path(__file__).resolve().parents[3] / relative  # a source checkout
        candidates += [relative, checkout]
    for path in candidates:
        if path.is_file():
            return path
    raise UsageError(
        f"no detector cases at {candidates[0]}; pass --cases FILE or set ${CASES_ENV} "
        "(the set lives in the repository under evals/detectors/)"
    )


async def eval_detectors(ctx: Context, args: argparse.Namespace) -> int:
    path = _cases_path(args.cases)
    try:
        cases = load_cases(path)
    except (ValueError, ValidationError) as exc:
        raise UsageError(f"{path}: {exc}") from exc
    splits = ("all", "dev", "test") if args.split == "all" else (args.split,)
    results = {}
    for split in splits:
        chosen = [c for c in cases if split in ("all", c.split)]
        ctx.err.write(f"eval detectors: {split}: {len(chosen):,} cases from {path}\n")
        ctx.err.flush()
        results[split] = evaluate(chosen)
    if ctx.as_json:
        out: dict[str, JSONValue] = {"cases_file": str(path)}
        out.update({split: result.to_dict() for split, result in results.items()})
        print_json(ctx, out)
        return 0
    for split, result in results.items():
        title = {"all": "all cases", "dev": "dev (tuned on)", "test": "test (held out)"}[split]
        ctx.out.write(f"== {title}\n{render_table(result)}\n")
        if args.errors:
            for case_id, error, detector, seq in result.misses:
                ctx.out.write(f"  {error}  {detector:<22} #{seq:<4} {case_id}\n")
    return 0
