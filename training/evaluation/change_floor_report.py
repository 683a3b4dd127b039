"""Tables of ``change_floor.py`` (round 2): the leave-one-city-out picks under the no-change limit, the shipped default's
and the previous default's marked share on changed and unchanged pairs, and the judged outcomes."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.evaluation.change_tables import pct


def markdown(r: dict[str, Any]) -> str:
    sel, cities, tables = r["selection"], r["cities"], r["tables"]
    default, previous = sel["default"], r["previous_default"]
    base = r["baseline_otsu_raw_cva"]
    ext = r.get("external_limit_pct")
    lines = [
        f"Candidates: {r['candidates']}; no-change limit: at most {r['no_change_limit_pct']:g} % of the training "
        "cities' self-shift pairs on average"
        + (f", and at most {ext:g} % of each real short-term pair" if ext is not None else "")
        + ". Fold picks found under the limits: "
        + ", ".join(f"{f['held_out']} {'yes' if f.get('found', True) else 'no (closest shown)'}" for f in sel["folds"])
        + "; largest real short-term share of each fold's pick: "
        + ", ".join(f"{f.get('external_max_share_pct', float('nan')):.2f} %" for f in sel["folds"])
        + ".",
        "",
        "| held-out city | pick | eligible | self-shift share, other 9 | held-out F1 | held-out share | true share "
        "| held-out self-shift share | Otsu on raw-band CVA: F1 / share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sel["folds"]:
        c = f["held_out"]
        lines.append(
            f"| {c} | {f['pick']} | {f['eligible']} | {f['train_self_shift_share_pct']:.2f} % | "
            f"{100 * f['held_out_f1']:.1f} | {pct(f['held_out_share'])} | {pct(r['true_share'][c])} | "
            f"{pct(f['held_out_self_shift_share'])} | {100 * base[c]['f1']:.1f} / {pct(base[c]['share'])} |"
        )
    otsu = float(np.mean([base[c]["f1"] for c in cities]))
    lines += [
        "",
        f"Picks: {sel['counts']}. **Default: {default}**; mean held-out F1 {100 * sel['held_out_mean_f1']:.1f} "
        f"against {100 * otsu:.1f} for Otsu on raw-band CVA. Level floors on all 10 cities (smoothing: quantile: "
        f"level): {r['level_floors_all_cities']}.",
        "",
        "| pair | true share | default: share / patches / F1 | previous default: share / patches / F1 |",
        "|---|---|---|---|",
    ]
    for c in cities:
        d, p = tables[default]["cities"][c], tables[previous]["cities"][c]
        lines.append(
            f"| {c} | {pct(r['true_share'][c])} | {pct(d['share'])} / {d['patches']} / {100 * d['f1']:.1f} | "
            f"{pct(p['share'])} / {p['patches']} / {100 * p['f1']:.1f} |"
        )
    lines += [
        "",
        "| pair with no change | default: share / patches | previous default: share / patches |",
        "|---|---|---|",
    ]
    for kind, names in (("self_shift", cities), ("external", list(tables[default]["external"]))):
        for n in names:
            d, p = tables[default][kind][n], tables[previous][kind][n]
            label = f"{n}, date 1 against itself moved 0.5 px" if kind == "self_shift" else n
            lines.append(f"| {label} | {pct(d['share'])} / {d['patches']} | {pct(p['share'])} / {p['patches']} |")
    worst = max(v["share"] for kind in ("self_shift", "external") for v in tables[default][kind].values())
    lines += [
        "",
        f"Judged: held-out F1 {100 * sel['held_out_mean_f1']:.1f} against {100 * otsu:.1f} "
        f"({'met' if sel['held_out_mean_f1'] > otsu else 'not met'}); the default's largest share on a pair with no "
        f"change {pct(worst)} ({'met' if worst <= 0.005 else 'not met'}: at most 0.5 % each).",
    ]
    return "\n".join(lines)
