"""The table of the recipe ablation (``docs/results/change_ablation.md``): per arm, the self-shift test
(``change_shift_noise.py``) and zero-shot change (``change_defaults.py``) of its encoder, and the verdict of the
reading rule written before the runs (against the baseline, the first arm).

    python -m training.evaluation.change_ablation_report --arm baseline docs/results/change_misregister_base \\
        --arm "no same-image negatives" docs/results/change_ablation_no-same-image-negatives ...

(each arm's files are PREFIX_shift.json and PREFIX_change.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluation.change_defaults_report import mean_metric

SCORE = "whitened-box5"  # the default scorer of `earth-embed change`, the rule's scorer
AP_STEP, S_STEP = 0.005, 0.10  # the rule: +-0.5 point of mean AP, +-10 % (relative) of the 0.5 px shift/real


def shift_mean(shift: dict[str, Any], score: str, px: str, key: str) -> float:
    """Mean over cities of one ``change_shift_noise`` measure of the encoder."""
    for e in shift["means"]:
        if (e["source"], e["score"], e["shift"]) == ("encoder", score, px):
            return float(e[key]["mean"])
    return float("nan")


def measures(shift: dict[str, Any], change: dict[str, Any]) -> dict[str, float]:
    """The figures of one arm (fractions, as in the result files)."""
    su = "shift_over_unchanged "
    return {
        "S": shift_mean(shift, SCORE, "0.5 px", su + "all"),
        "S built-up": shift_mean(shift, SCORE, "0.5 px", su + "built-up or bare"),
        "S vegetation": shift_mean(shift, SCORE, "0.5 px", su + "vegetation"),
        "1 px": shift_mean(shift, SCORE, "1 px", su + "all"),
        "1 px cva": shift_mean(shift, "cva", "1 px", su + "all"),
        "0.5 px cva": shift_mean(shift, "cva", "0.5 px", su + "all"),
        "changed/shift": shift_mean(shift, SCORE, "0.5 px", "changed_over_shift"),
        "A": mean_metric(change, "encoder", SCORE, 0, "ap"),
        "AUROC": mean_metric(change, "encoder", SCORE, 0, "auroc"),
        "A box5": mean_metric(change, "encoder", SCORE, 5, "ap"),
        "cva AP": mean_metric(change, "encoder", "cva", 0, "ap"),
        "cva AUROC": mean_metric(change, "encoder", "cva", 0, "auroc"),
        "mask F1": float(change["mask_selection"]["held_out_mean"]),
    }


def verdict(arm: dict[str, float], base: dict[str, float]) -> str:
    """The reading rule of change_ablation.md for the arm that turns one ingredient off."""
    d_ap, d_s, eps = arm["A"] - base["A"], arm["S"] / base["S"] - 1, 1e-9
    ap_up, ap_down = d_ap >= AP_STEP - eps, d_ap <= -AP_STEP + eps
    s_down, s_up = d_s <= -S_STEP + eps, d_s >= S_STEP - eps
    if (ap_up or s_down) and (ap_down or s_up):
        return "mixed: " + ("removes" if ap_up else "helps") + " by A"
    if ap_up or s_down:
        return "removes change sensitivity" + (" (both measures)" if ap_up and s_down else "")
    return "helps change sensitivity" if ap_down or s_up else "no effect shown"


def markdown(arms: dict[str, dict[str, float]]) -> str:
    """One row per arm; the first arm is the baseline."""
    base = next(iter(arms.values()))
    head = (
        "| arm | S: `shift/real` 0.5 px (vs baseline) | 0.5 px: built-up or bare / vegetation | 1 px | CVA 0.5 px / 1 px "
        "| `changed/shift` 0.5 px | A: mean AP (vs baseline) | AUROC | AP, 5 x 5 box mean | CVA AP / AUROC "
        "| mask F1 held out | verdict |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in arms.items():
        first = m is base
        ds = "" if first else f" ({100 * (m['S'] / base['S'] - 1):+.1f} %)"
        da = "" if first else f" ({100 * (m['A'] - base['A']):+.1f})"
        lines.append(
            f"| {name} | {m['S']:.3f}{ds} | {m['S built-up']:.3f} / {m['S vegetation']:.3f} | {m['1 px']:.3f} "
            f"| {m['0.5 px cva']:.3f} / {m['1 px cva']:.3f} | {m['changed/shift']:.1f} | {100 * m['A']:.1f}{da} "
            f"| {100 * m['AUROC']:.1f} | {100 * m['A box5']:.1f} | {100 * m['cva AP']:.1f} / "
            f"{100 * m['cva AUROC']:.1f} | {100 * m['mask F1']:.1f} | {'-' if first else verdict(m, base)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", nargs=2, action="append", required=True, metavar=("NAME", "PREFIX"),
                   help="an arm's name and result files' prefix; the first is the baseline")  # fmt: skip
    arms: dict[str, dict[str, float]] = {}
    for name, prefix in p.parse_args(argv).arm:
        files = [Path(f"{prefix}_{kind}.json") for kind in ("shift", "change")]
        arms[name] = measures(*(json.loads(f.read_text()) for f in files))
        if not all(np.isfinite(v) for v in arms[name].values()):
            raise SystemExit(f"{prefix}_{{shift,change}}.json lack some of the encoder's rows; rerun them")
    table = markdown(arms)
    print(table)
    return table


if __name__ == "__main__":
    main()
