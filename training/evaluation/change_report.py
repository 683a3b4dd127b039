"""Tables and targets of ``change_detection.py``: means over cities (random init over seeds and few-shot over
draws averaged per city first), per-city cells, and the issue's targets stated as met or not."""

from __future__ import annotations

from typing import Any

import numpy as np

ZERO_SHOT = ("encoder cos", "encoder cva", "random init cos", "random init cva", "raw bands cva", "hand-made stack cva")
FITTED = ("encoder fitted", "raw bands fitted", "hand-made stack fitted")
METRICS = ("ap", "auroc", "f1")


def rows_of(result: dict[str, Any]) -> list[tuple[str, int | None]]:
    """(score, shots) of every table row, in order."""
    out: list[tuple[str, int | None]] = [(s, None) for s in ZERO_SHOT]
    return out + [(s, n) for n in result["shots"] for s in FITTED]


def per_city(result: dict[str, Any], score: str, shots: int | None, smooth: int, metric: str) -> dict[str, float]:
    """City -> metric (mean over seeds or draws), for the cities that have the row."""
    out = {}
    for city in result["cities"]:
        v = [r[metric] for r in result["rows"]
             if r["city"] == city and r["score"] == score and r["shots"] == shots and r["smooth"] == smooth]  # fmt: skip
        if v:
            out[city] = float(np.mean(v))
    return out


def mean_over_cities(result: dict[str, Any], score: str, shots: int | None, smooth: int, metric: str) -> float | None:
    v = per_city(result, score, shots, smooth, metric)
    return float(np.mean(list(v.values()))) if len(v) == len(result["cities"]) else None


def label(result: dict[str, Any], score: str, shots: int | None) -> str:
    if shots is not None:
        return f"{score} ({shots} px per class, mean of {result['draws']} draws)"
    if score.startswith("random init"):
        return f"{score} (mean of {len(result['random_seeds'])} seeds)"
    return score


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, one entry per smoothing setting: zero-shot (the encoder's better score by mean AP
    above raw-band CVA and hand-made-stack CVA in both mean AP and mean AUROC) and few-shot at the smallest N
    (the encoder's fitted score above the raw bands' and the stack's, by mean AP)."""
    out = []
    for k in result["smooth"]:

        def m(score: str, shots: int | None = None, metric: str = "ap", k: int = k) -> float:
            v = mean_over_cities(result, score, shots, k, metric)
            return float("nan") if v is None else v

        best = max(("encoder cos", "encoder cva"), key=lambda s: m(s))
        bars = ("raw bands cva", "hand-made stack cva")
        zs = {
            "kind": "zero-shot", "smooth": k, "encoder_score": best,
            "encoder_ap": m(best), "encoder_auroc": m(best, metric="auroc"),
            "bars": {b: {"ap": m(b), "auroc": m(b, metric="auroc")} for b in bars},
        }  # fmt: skip
        zs["met"] = bool(
            all(zs["encoder_ap"] > v["ap"] and zs["encoder_auroc"] > v["auroc"] for v in zs["bars"].values())
        )
        out.append(zs)
        if result["shots"]:
            n = min(result["shots"])
            fs = {
                "kind": "few-shot", "smooth": k, "shots": n, "encoder_ap": m("encoder fitted", n),
                "bars": {b: {"ap": m(b, n)} for b in ("raw bands fitted", "hand-made stack fitted")},
            }  # fmt: skip
            fs["met"] = bool(all(fs["encoder_ap"] > v["ap"] for v in fs["bars"].values()))
            out.append(fs)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: mean table, per-city tables, targets, command and date."""
    smooth = result["smooth"]
    name = {k: "none" if k in (0, 1) else f"{k} x {k} box mean" for k in smooth}
    load = result.get("load_average_5min", ["?", "?"])
    lines = [
        f"# Urban change on {len(result['cities'])} OSCD city pairs: zero-shot and few-shot change scores",
        "",
        f"Date {result['date']}; encoder `{result['encoder']}`; {result['seconds'] / 60:.1f} min wall "
        f"({result.get('cpu_seconds', float('nan')) / 60:.1f} min of CPU) with {result['threads']} torch thread(s) on "
        f"the 2-core machine, shared with other jobs (5-min load average {load[0]} at the start, {load[1]} at the "
        "end). Command:",
        "",
        f"```bash\n{result['command']}\n```",
        "",
        "Labels: `labelled/oscd-change` (urban change only, 2.2 % of pixels), on the earlier date's grid; the later "
        "date resampled onto it (bilinear) where the grids differ. Metrics of the change class over every valid "
        "pixel (few-shot: the pixels not drawn for training): average precision (AP), AUROC, best F1 over "
        "thresholds, in %. Scores are `earth_embed.apps.change_scores` (what `earth-embed change` computes).",
        "",
        "## Mean over the cities",
        "",
        "| score | " + " | ".join(f"AP / AUROC / F1 ({name[k]})" for k in smooth) + " |",
        "|---|" + "---|" * len(smooth),
    ]
    for score, shots in rows_of(result):
        cells = []
        for k in smooth:
            vals = [mean_over_cities(result, score, shots, k, m) for m in METRICS]
            cells.append(" / ".join(_pct(v) for v in vals))
        if any(c != "- / - / -" for c in cells):
            lines.append(f"| {label(result, score, shots)} | " + " | ".join(cells) + " |")
    for k in smooth:
        lines += ["", f"## Per city, AP / AUROC / best F1 (%), smoothing: {name[k]}", "",
                  "| score | " + " | ".join(result["cities"]) + " |", "|---|" + "---|" * len(result["cities"])]  # fmt: skip
        for score, shots in rows_of(result):
            per = {m: per_city(result, score, shots, k, m) for m in METRICS}
            if not per["ap"]:
                continue
            cells = [" / ".join(_pct(per[m].get(c)) for m in METRICS) for c in result["cities"]]
            lines.append(f"| {label(result, score, shots)} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (issue 29)", ""]
    for t in result["targets"]:
        bars = "; ".join(
            f"{b} AP {_pct(v['ap'])}" + (f" / AUROC {_pct(v['auroc'])}" if "auroc" in v else "")
            for b, v in t["bars"].items()
        )
        verdict = "**met**" if t["met"] else "**not met**"
        if t["kind"] == "zero-shot":
            lines.append(
                f"- Zero-shot, smoothing {name[t['smooth']]}: the encoder's better score ({t['encoder_score']}) has "
                f"mean AP {_pct(t['encoder_ap'])} / AUROC {_pct(t['encoder_auroc'])} against {bars}: {verdict} "
                "(the target: above both in AP and in AUROC)."
            )
        else:
            lines.append(
                f"- Few-shot ({t['shots']} px per class), smoothing {name[t['smooth']]}: embeddings' fitted head mean AP "
                f"{_pct(t['encoder_ap'])} against {bars}: {verdict} (the target: above both)."
            )
    return "\n".join(lines)
