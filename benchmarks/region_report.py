"""The report of ``benchmarks/region_throughput.py``: issues 27's and 36's targets, the Ray scaling, memory-format
and runtime comparisons, and the Markdown table, all computed from a run's JSON (``region_throughput.py --report
FILE``). A target that this machine cannot measure is printed NOT MEASURED, with the reason."""

from __future__ import annotations

#: The bare forward's fp32 figure of the code as issue 36 found it (``region_throughput.ISSUE36_FOUND``, run from
#: a copy of that commit in the same run): the reference of its portable-path targets.
FOUND = "fp32 as issue 36 found it"


def _by(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["run"], r["side"]): r for r in rows}


def targets(
    rows: list[dict], bare: dict, prec: str, avx2: dict | None = None, kept: tuple[str, ...] = ("torch",)
) -> list[dict]:
    """The targets from the rows: each with its measured ratio, its bound and met (True), missed (False) or not
    measured (None, with ``why``)."""
    by = _by(rows)
    sides = sorted({r["side"] for r in rows})
    if not sides:
        return []
    small, large = sides[0], sides[-1]
    out = []

    def add(name: str, ratio: float | None, bound: float, above: bool = True, why: str = "") -> None:
        if ratio is not None or why:
            met = None if ratio is None else (ratio >= bound if above else ratio <= bound)
            sign = ">=" if above else "<="
            out.append({"target": name, "ratio": ratio, "bound": f"{sign} {bound}", "met": met, "why": why})

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
    tex = by.get(("texture layer", small))
    if tex:
        add("texture layer / fp32 forward (one process, interleaved)", tex["share"], 0.10, above=False)
    today = fwd.get(FOUND) or fwd.get("fp32")
    paths = {p: fwd[p] for p in ("fp32", *kept) if p in fwd and p != "torch"}
    if today and paths and (FOUND in fwd or len(paths) > 1):
        best = max(paths, key=lambda p: paths[p])
        ref = FOUND if FOUND in fwd else "torch fp32 eager"
        add(f"fastest kept fp32 path ({best}) / {ref} {fmt}, this CPU", paths[best] / today, 1.5)
    if avx2:
        a = avx2["px_per_s"]
        emulated = (
            f"; emulated (torch, oneDNN and the kernels held to AVX2 on this CPU): fp32 {a['fp32']:,.0f} px/s against "
            f"{a[FOUND]:,.0f} as issue 36 found it, {a['fp32'] / a[FOUND]:.2f}x"
            if FOUND in a
            else ""
        )
        why = (
            "no AVX2-only CPU here; torch can be held to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) but ONNX "
            f"Runtime cannot (it picks kernels by CPUID): onnx {a.get('onnx', 0):,.0f} px/s with every instruction "
            f"vs torch fp32 {a.get('fp32', 0):,.0f} px/s held to AVX2{emulated}"
        )
        add("fastest kept fp32 path / fp32 eager as issue 36 found it, AVX2-only CPU", None, 1.5, why=why)
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
        other = next((r for (run, s), r in by.items() if s == side and run == f"local {r.get('memory_format')}"), None)
        if local and other:
            out.append(
                f"local engine, {other['memory_format']} / {local['memory_format']} ({side} x {side}): end to end "
                f"{other['px_per_s'] / local['px_per_s']:.2f}x, each to its own bare forward "
                f"{other['ratio_to_bare']:.2f} vs {local['ratio_to_bare']:.2f}"
            )
        for (_, s), r in by.items():
            if s == side and local and r.get("runtime", "torch") != "torch":
                out.append(
                    f"local engine, {r['runtime']} fp32 / torch {local['precision']} ({side} x {side}): end to end "
                    f"{r['px_per_s'] / local['px_per_s']:.2f}x, each to its own bare forward "
                    f"{r['ratio_to_bare']:.2f} vs {local['ratio_to_bare']:.2f}"
                )
    return out


def allocator_lines(res: dict) -> list[str]:
    """The bare forward with freed memory kept (as the engines run it: ``earth_embed.allocator``) against glibc's
    defaults (``<precision> system malloc``), on this CPU and held to AVX2, where the run timed both."""
    out = []
    for key, where in (("bare_forward", "this CPU"), ("bare_forward_avx2_emulated", "held to AVX2")):
        fwd = (res.get(key) or {}).get("px_per_s", {})
        ratios = [f"{p} {fwd[p] / fwd[f'{p} system malloc']:.2f}x" for p in fwd if f"{p} system malloc" in fwd]
        if ratios:
            out.append(f"bare forward, freed memory kept / glibc's defaults ({where}): {', '.join(ratios)}")
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
    cpu = res.get("cpu")
    if cpu:
        print(
            f"CPU: {cpu['model']}; flags {' '.join(cpu['flags'])}; torch's ATen capability {cpu['torch_capability']}; "
            f"ONNX Runtime picks its kernels from the same flags\n"
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
    avx2 = res.get("bare_forward_avx2_emulated")
    if avx2:
        a = avx2["px_per_s"]
        env = " ".join(f"{k}={v}" for k, v in res.get("isa_env", {}).items())
        print(
            f"\nbare forward with torch held to AVX2 ({env}; torch reports {avx2.get('cpu_capability')}): "
            + ", ".join(f"{p} {v:,.0f} px/s" for p, v in a.items())
            + " (onnx: ONNX Runtime has no such switch, so this is its full-ISA speed beside torch's AVX2 speed)"
        )
    for r in res["rows"]:
        if "share" in r:
            print(
                f"\ntexture layer ({' x '.join(map(str, r['layer_input']))} features): {r['layer_seconds']:.3f} s against "
                f"the fp32 forward's {r['seconds']:.3f} s: {r['share']:.0%}"
            )
    for r in res["rows"]:
        if "stages" in r:
            total = sum(r["stages"].values())
            parts = ", ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in r["stages"].items())
            print(f"\nwhere the time goes (local engine's units run serially, {r['side']} x {r['side']}): {parts}")
    lines = comparisons(res["rows"]) + allocator_lines(res)
    if lines:
        print("\nside by side:")
        for line in lines:
            print(f"- {line}")
    print("\ntargets (issues 27 and 36):")
    for t in res["targets"]:
        if t["met"] is None:
            print(f"- {t['target']} (target {t['bound']}): NOT MEASURED: {t['why']}")
        else:
            print(f"- {t['target']}: {t['ratio']:.2f} (target {t['bound']}): {'MET' if t['met'] else 'MISSED'}")
