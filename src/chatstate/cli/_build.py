"""``chatstate context``: what the next model call of a session would be given, and why."""

from __future__ import annotations

import argparse

from chatstate.cli._commands import Context, opened, print_json
from chatstate.context.engine import BuiltContext, ContextEngine
from chatstate.context.manifest import Manifest

__all__ = ["context"]


async def context(ctx: Context, args: argparse.Namespace) -> int:
    async with opened(ctx) as store:
        engine = ContextEngine(store, auto_compact=args.compact)
        built = await engine.build(
            args.id,
            args.message,
            tenant_id=ctx.tenant,
            model=args.model,
            budget=args.budget,
            branch=args.branch,
        )
        await engine.drain()
    if ctx.as_json:
        print_json(ctx, {"messages": built.messages, "manifest": built.manifest.to_dict()})  # type: ignore[dict-item]
        return 0
    ctx.out.write(render_manifest(built))
    return 0


def _ranges(seqs: tuple[int, ...]) -> str:
    """``1-4, 7, 9-10`` for a sorted tuple of seqs."""
    if not seqs:
        return "-"
    parts: list[str] = []
    start = prev = seqs[0]
    for seq in seqs[1:]:
        if seq == prev + 1:
            prev = seq
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = seq
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ", ".join(parts)


def render_manifest(built: BuiltContext) -> str:
    m: Manifest = built.manifest
    lines = [
        f"model {m.model}: {m.used:,} of {m.budget:,} tokens ({len(built.messages)} messages)",
        "",
        f"{'section':<10} {'tokens':>8}",
    ]
    lines += [f"{name:<10} {tokens:>8,}" for name, tokens in m.sections.items()]
    lines.append("")
    lines.append(f"verbatim   seqs {_ranges(m.verbatim)}")
    if m.summary is not None:
        cut = " (cut to fit)" if m.summary.truncated else ""
        lines.append(
            f"summary    event #{m.summary.seq} covers {m.summary.from_seq}-{m.summary.to_seq}{cut}"
        )
    for turn in m.retrieved:
        lines.append(f"retrieved  seqs {_ranges(turn.seqs)} (score {turn.score})")
    if m.dropped:
        lines.append(f"dropped    seqs {_ranges(m.dropped)} (no summary covers them yet)")
    for seq, reason in m.excluded:
        lines.append(f"excluded   #{seq}: {reason}")
    if m.uncovered_before is not None:
        lines.append(f"unexamined seqs before {m.uncovered_before} (compaction is behind)")
    lines.append(
        f"prefix     {m.prefix_tokens:,} tokens, {m.stable_prefix_tokens:,} unchanged since the "
        "previous build"
    )
    verdict = "YES: something was left out with no summary" if m.silent_truncation else "no"
    lines.append(f"silent truncation: {verdict}")
    if built.compaction_scheduled:
        lines.append("compaction: ran (--compact)")
    return "\n".join(lines) + "\n"
