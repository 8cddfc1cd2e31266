"""Print precision and recall per detector on ``cases.jsonl`` (the same as
``chatstate eval detectors``).

    .venv/bin/python evals/detectors/run.py [--cases FILE] [--errors] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatstate.health.evaluate import evaluate, load_cases, render_table

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description="precision and recall of the health detectors")
    parser.add_argument("--cases", type=Path, default=HERE / "cases.jsonl")
    parser.add_argument(
        "--errors", action="store_true", help="list every false positive and negative"
    )
    parser.add_argument("--json", action="store_true", help="the result as JSON")
    args = parser.parse_args()
    result = evaluate(load_cases(args.cases))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(render_table(result), end="")
    if args.errors:
        for case, error, detector, seq in result.misses:
            print(f"{error}  {detector:<22} #{seq:<4} {case}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
