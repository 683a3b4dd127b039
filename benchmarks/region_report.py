"""The report of ``benchmarks/region_throughput.py``: issue 27's targets, the Ray scaling and memory-format
comparisons, and the Markdown table, all computed from a run's JSON (``region_throughput.py --report FILE``)."""

from __future__ import annotations


def _by(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["run"], r["side"]): r for r in rows}


def targets(rows: list[dict], bare: dict, prec: str) -> list[dict]:
    """Issue 27's targets from the rows: each with its measured ratio, its bound and met/missed."""
    by = _by(rows)
    sides = sorted({r["side"] for r in rows})
    if not sides:
        return []
    small, large = sides[0], sides[-1]
    out = []

    def add(name: str, ratio: float | None, bound: float, above: bool = True) -> None:
        if ratio is not None:
            met = ratio >= bound if above else ratio <= bound
            out.append({"target": name, "ratio": ratio, "bound": f"{'>=' if above else '<='} {bound}", "met": met})

    fwd = bare["px_per_s"]
    fmt = bare.get("memory_format", "contiguous")
    ref = "fp32 contiguous" if "fp32 contiguous" in fwd else "fp32"
    add(
        f"bare forward {prec} {fmt} / bare forward fp32 contiguous (one process, interleaved)",
        fwd[prec] / fwd[ref],
        2.0,
    )
    for side in sides:
        r = by.get(("local", side))
        if r:
            add(f"local engine / bare forward {prec} ({side} x {side}, same load)", r["ratio_to_bare"], 0.8)
    local = by.get(("local", small))
    for run, bound in ((f"torchgeo {prec}", 2.0), ("torchgeo fp32", 3.0)):
        tg = by.get((run, small))
        if local and tg:
            add(
                f"local engine {prec} / TorchGeo {run.split()[1]} ({small} x {small})",
                local["px_per_s"] / tg["px_per_s"],
                bound,
            )
    for run in ("local", "ray2"):
        a, b = by.get((run, small)), by.get((run, large))
        if a and b and small != large:
            what = "local engine" if run == "local" else "per Ray worker (2 workers)"
            add(f"peak RSS 4x / 1x region, {what}", b["peak_rss_mb"] / a["peak_rss_mb"], 1.2, above=False)
    return out


def comparisons(rows: list[dict]) -> list[str]:
    """Side-by-side ratios that are no target: Ray's speed-up per added worker (2 workers / 1, end to end and on
    the units' own clock, which leaves Ray's start-up and the actors' model loads out) and the local engine in
    the other memory format against the chosen one."""
    by, out = _by(rows), []
    for side in sorted({r["side"] for r in rows}):
        one, two = by.get(("ray1", side)), by.get(("ray2", side))
        if one and two:
            clock = ""
            if one.get("units_px_per_s") and two.get("units_px_per_s"):
                clock = f", on the units' clock {two['units_px_per_s'] / one['units_px_per_s']:.2f}x"
            out.append(
                f"Ray, 2 workers / 1 worker ({side} x {side}; the speed-up of one added worker): end to end "
                f"{two['px_per_s'] / one['px_per_s']:.2f}x{clock}"
            )
        local = by.get(("local", side))
        other = next((r for (run, s), r in by.items() if s == side and run.startswith("local ")), None)
        if local and other:
            out.append(
                f"local engine, {other['memory_format']} / {local['memory_format']} ({side} x {side}): end to end "
                f"{other['px_per_s'] / local['px_per_s']:.2f}x, each to its own bare forward "
                f"{other['ratio_to_bare']:.2f} vs {local['ratio_to_bare']:.2f}"
            )
    return out


def report(res: dict) -> None:
    """Print the run as a Markdown table with the targets, met or missed."""
    print(
        f"\nearth-embed region throughput, {res['date_utc']} UTC ({res['host']}, {res['cpu_cores']} CPU cores, torch "
        f"{res['torch']}, threads {res['threads']}); model {res['model']}; precision {res['precision']}; memory format "
        f"{res.get('memory_format', 'contiguous')}; block {res['block']} + halo {res['halo']}, shard {res['shard']}; "
        f"load avg (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in res['load_avg_start'])}, at end "
        f"{'/'.join(f'{x:.1f}' for x in res['load_avg_end'])}; total {res['total_seconds'] / 60:.1f} min\n"
    )
    if not res.get("complete", True):
        print("INCOMPLETE: the run stopped before its last rows; the rows below are the ones it finished\n")
    bare = res["bare_forward"]
    fwd = ", ".join(f"{p} {v:,.0f} px/s" for p, v in bare["px_per_s"].items())
    print(
        f"bare forward ({res['block']} x {res['block']}, one process, interleaved, "
        f"{bare.get('memory_format', 'contiguous')} unless named): {fwd} (load {bare['load']:.1f})\n"
    )
    print(
        "| run | precision | region | px/s | units' clock px/s | bare forward px/s (same load) | ratio to bare "
        "| wall (s) | model load (s) | ray start (s) | peak RSS per worker (MB) | output (MB) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        opt = {k: f"{r[k]:.1f}" if r.get(k) else "" for k in ("model_load", "startup")}
        out = f"{r['out_mb']:,.0f}" if "out_mb" in r else ""
        clock = f"{r['units_px_per_s']:,.0f}" if r.get("units_px_per_s") else ""
        print(
            f"| {r['run']} | {r['precision']} | {r['side']} x {r['side']} | {r['px_per_s']:,.0f} | {clock} "
            f"| {r['bare_px_per_s']:,.0f} | {r['ratio_to_bare']:.2f} | {r['seconds']:.1f} | {opt['model_load']} "
            f"| {opt['startup']} | {r['peak_rss_mb']:,.0f} | {out} | {r['load']:.1f} |"
        )
    for r in res["rows"]:
        if "stages" in r:
            total = sum(r["stages"].values())
            parts = ", ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in r["stages"].items())
            print(f"\nwhere the time goes (local engine's units run serially, {r['side']} x {r['side']}): {parts}")
    lines = comparisons(res["rows"])
    if lines:
        print("\nside by side:")
        for line in lines:
            print(f"- {line}")
    print("\nissue 27 targets:")
    for t in res["targets"]:
        print(f"- {t['target']}: {t['ratio']:.2f} (target {t['bound']}): {'MET' if t['met'] else 'MISSED'}")
