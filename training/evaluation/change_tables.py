"""What the change-mask write-ups (``change_floor.py``, ``change_adaptive.py``, ``change_believable.py``) share: the
share format, the default picked by the leave-one-city-out folds, and the rows of the table of every pair."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np


def pct(x: float) -> str:
    """A share in [0, 1] as a percentage with two decimals."""
    return f"{100 * x:.2f} %"


def most_picked(folds: list[dict], held_out: Callable[[dict], float]) -> tuple[Counter, str]:
    """The folds' pick counts and the default: the candidate the most folds picked, a tie to the higher mean
    ``held_out(fold)`` over the folds that picked it."""
    counts = Counter(f["pick"] for f in folds)

    def held_mean(cand: str) -> float:
        return float(np.mean([held_out(f) for f in folds if f["pick"] == cand]))

    return counts, max(counts, key=lambda cand: (counts[cand], held_mean(str(cand))))


def share_rows(r: dict[str, Any], cur: str, new: str, by_city: bool) -> list[str]:
    """``| pair | true share | cur: share / patches | new: share / patches |`` for every pair of a result ``r``: the
    cities (``all_cities``), their self-shift pairs (``self_shift_all_cities``) and the real short-term pairs
    (``external``). ``by_city``: each city's self-shift pair right after the city; else all the cities first."""
    real = [(c, pct(r["true_share"][c]), r["all_cities"][c]) for c in r["cities"]]
    shift = [(f"{c}, date 1 against itself moved 0.5 px", "0", r["self_shift_all_cities"][c]) for c in r["cities"]]
    rows = [row for pair in zip(real, shift) for row in pair] if by_city else real + shift
    rows += [(e, "(no urban change)", v) for e, v in r["external"].items()]
    return [
        f"| {label} | {true} | {pct(v[cur]['share'])} / {v[cur]['patches']} | {pct(v[new]['share'])} / "
        f"{v[new]['patches']} |"
        for label, true, v in rows
    ]
