"""The history checker's own cases beyond those in test_multi_instance: phantom values."""

from __future__ import annotations

from chatstate.testing.history import Op, check_history


def test_a_value_no_operation_wrote_is_a_phantom() -> None:
    ops = [
        Op("append", "s", True, value="a", seq=1, started=1, ended=2),
        Op("read", "s", True, seen=("a", "ghost"), started=3, ended=4),
    ]
    found = check_history(ops, {"s": ["a", "ghost"]})
    assert [(a.kind, "ghost" in a.detail) for a in found] == [("phantom", True)]
    # Seen only in a read (and gone from the final log): a phantom, and not a prefix.
    kinds = sorted(a.kind for a in check_history(ops, {"s": ["a"]}))
    assert kinds == ["not a prefix", "phantom"]


def test_a_refused_append_found_in_the_log_is_a_phantom_and_an_unknown_one_is_not() -> None:
    ops = [
        Op("append", "s", False, value="refused", started=1, ended=2, refused=True),
        Op("append", "s", False, value="timed out", started=1, ended=2),
    ]
    found = check_history(ops, {"s": ["refused", "timed out"]})
    assert [(a.kind, "refused append" in a.detail) for a in found] == [("phantom", True)]
    assert check_history(ops, {"s": ["timed out"]}) == []
    assert check_history(ops, {"s": []}) == []


def test_ops_round_trip_through_jsonl_with_refused() -> None:
    op = Op("append", "s", False, value="v", started=1, ended=2, refused=True)
    assert Op.from_json(op.to_json()) == op
    old = (
        '{"kind":"read","session":"s","ok":true,"value":null,"seq":null,"seen":[],'
        '"started":0,"ended":0}'
    )
    assert Op.from_json(old).refused is False
