"""Tables of ``change_defaults.py``: every scorer on the three sources, the leave-one-city-out picks of the
scorer and of the mask rule, the default mask against Otsu on raw-band CVA, and the issue's targets."""

from __future__ import annotations

from typing import Any

import numpy as np

SOURCES = ("encoder", "raw bands", "hand-made stack")


def mean_metric(result: dict[str, Any], source: str, score: str, smooth: int, metric: str) -> float:
    v = [r[metric] for r in result["rows"] if (r["source"], r["score"], r["smooth"]) == (source, score, smooth)]
    return float(np.mean(v)) if len(v) == len(result["cities"]) else float("nan")


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Zero-shot (the default scorer on the embedding above raw bands and stack in mean AP and AUROC, with and
    without a 5 x 5 box mean) and the mask (mean held-out F1 above Otsu on raw-band CVA)."""
    score = result["scorer_selection"]["default"]
    out = []
    for k in (0, 5):
        m = {s: {x: mean_metric(result, s, score, k, x) for x in ("ap", "auroc")} for s in SOURCES}
        met = all(m["encoder"][x] > m[s][x] for s in SOURCES[1:] for x in ("ap", "auroc"))
        out.append({"kind": "zero-shot", "score": score, "smooth": k, "means": m, "met": bool(met)})
    f1 = result["mask_selection"]["held_out_mean"]
    base = float(np.mean([v["f1"] for v in result["baseline_otsu_raw_cva"].values()]))
    out.append({"kind": "mask", "default_f1_held_out": f1, "otsu_raw_cva_f1": base, "met": bool(f1 > base)})
    return out


def _p(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{100 * v:.1f}"


def markdown(result: dict[str, Any]) -> str:
    cities = result["cities"]
    lines = [f"Run {result['date']}: {result['seconds'] / 60:.1f} min wall ({result['cpu_seconds'] / 60:.1f} min "
             f"CPU), {result['threads']} thread(s), 5-min load average {result['load_average_5min'][0]} at the "
             f"start and {result['load_average_5min'][1]} at the end. Command: `{result['command']}`", "",
             "### Every scorer, mean over the 10 cities: AP / AUROC (%)", "",
             "| scorer | " + " | ".join(f"{s} | {s}, 5 x 5 box mean" for s in SOURCES) + " |",
             "|---|" + "---|" * (2 * len(SOURCES))]  # fmt: skip
    for score in result["scores"]:
        cells = [f"{_p(mean_metric(result, s, score, k, 'ap'))} / {_p(mean_metric(result, s, score, k, 'auroc'))}"
                 for s in SOURCES for k in (0, 5)]  # fmt: skip
        lines.append(f"| `{score}` | " + " | ".join(cells) + " |")
    sel = result["scorer_selection"]
    lines += ["", "### Scorer, leave-one-city-out (embedding AP, no smoothing)", "",
              "| held-out city | pick (best mean AP on the other 9) | held-out AP |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {f['held_out']} | `{f['pick']}` | {_p(f['held_out_value'])} |" for f in sel["folds"]]
    lines += ["", f"Picks: {sel['counts']}. **Default scorer: `{sel['default']}`**, mean held-out AP "
              f"{_p(sel['held_out_mean'])}.", ""]  # fmt: skip
    ms, base, true = result["mask_selection"], result["baseline_otsu_raw_cva"], result["true_share"]
    lines += ["### Mask rule, leave-one-city-out (change-class F1 of the embedding's default score map)", "",
              "| held-out city | pick (best mean F1 on the other 9) | held-out F1 | marked share | true share | "
              "Otsu on raw-band CVA: F1 / marked share |", "|---|---|---|---|---|---|"]  # fmt: skip
    for f in ms["folds"]:
        c = f["held_out"]
        lines.append(f"| {c} | {f['pick']} | {_p(f['held_out_value'])} | {_p(f['held_out_share'])} % | "
                     f"{_p(true[c])} % | {_p(base[c]['f1'])} / {_p(base[c]['share'])} % |")  # fmt: skip
    base_f1 = float(np.mean([base[c]["f1"] for c in cities]))
    lines += ["", f"Picks: {ms['counts']}. **Default mask rule: {ms['default']}**; mean held-out F1 "
              f"{_p(ms['held_out_mean'])} against {_p(base_f1)} for Otsu on raw-band CVA. The shipped default on "
              "each city (not held out): " + ", ".join(
                  f"{c} {_p(result['mask_default_per_city'][c]['f1'])} ({_p(result['mask_default_per_city'][c]['share'])} %)"
                  for c in cities) + ".", "", "### Targets (issue 33)", ""]  # fmt: skip
    for t in targets(result):
        if t["kind"] == "zero-shot":
            m = t["means"]
            lines.append(f"- Zero-shot `{t['score']}`, smoothing {t['smooth'] or 'none'}: embedding AP "
                         f"{_p(m['encoder']['ap'])} / AUROC {_p(m['encoder']['auroc'])}; raw bands "
                         f"{_p(m['raw bands']['ap'])} / {_p(m['raw bands']['auroc'])}; stack "
                         f"{_p(m['hand-made stack']['ap'])} / {_p(m['hand-made stack']['auroc'])}: "
                         f"**{'met' if t['met'] else 'not met'}**.")  # fmt: skip
        else:
            lines.append(f"- Default mask F1 (held out) {_p(t['default_f1_held_out'])} against Otsu on raw-band CVA "
                         f"{_p(t['otsu_raw_cva_f1'])}: **{'met' if t['met'] else 'not met'}**.")  # fmt: skip
    return "\n".join(lines)
