"""benchmarks/region_report.py and region_workers.cpu_info: every target is printed MET, MISSED or NOT MEASURED
(with why), the runtime and texture targets are computed from the rows, and the JSON names the CPU's flags."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import region_report
        import region_workers
    finally:
        sys.path.remove(str(BENCH))
    return region_report, region_workers


def _rows() -> list[dict]:
    base = {"precision": "fp32", "seconds": 1.0, "peak_rss_mb": 1000.0, "load": 1.0, "bare_px_per_s": 100.0}
    return [
        {**base, "run": "local", "side": 2000, "px_per_s": 80.0, "ratio_to_bare": 0.8, "memory_format": "cl"},
        {**base, "run": "local", "side": 4000, "px_per_s": 70.0, "ratio_to_bare": 0.7, "peak_rss_mb": 1300.0},
        {
            **base,
            "run": "texture layer",
            "side": 2000,
            "px_per_s": 1.0,
            "ratio_to_bare": 1.0,
            "share": 0.12,
            "layer_seconds": 0.12,
            "layer_input": [1, 32, 1024, 1024],
        },
        {**base, "run": "local onnx", "side": 2000, "px_per_s": 120.0, "ratio_to_bare": 0.6, "runtime": "onnx"},
    ]


def test_targets_met_missed_and_not_measured(bench, capsys):
    report, _ = bench
    bare = {"px_per_s": {"fp32": 100.0, "onnx": 160.0, "onnx-int8": 300.0}, "memory_format": "channels_last"}
    avx2 = {"px_per_s": {"fp32": 50.0, "onnx": 160.0}}
    out = {t["target"]: t for t in report.targets(_rows(), bare, "fp32", avx2, ("torch", "onnx"))}
    assert out["texture layer / fp32 forward (one process, interleaved)"]["met"] is False
    fastest = out["fastest kept fp32 path (onnx) / torch fp32 eager channels_last, this CPU"]
    assert fastest["met"] and fastest["ratio"] == pytest.approx(1.6)  # onnx-int8 is faster but not kept
    assert out["local engine / bare forward fp32 (2000 x 2000, same load)"]["met"] is True
    assert out["peak RSS 4x / 1x region, local engine"]["met"] is False  # 1.3 > 1.2
    avx2_target = out["fastest kept fp32 path / fp32 eager as issue 36 found it, AVX2-only CPU"]
    assert avx2_target["met"] is None and "ONNX Runtime cannot" in avx2_target["why"]
    # with the code as issue 36 found it measured alongside, it is the reference (emulated AVX2 stated)
    ops = {**bare, "px_per_s": {**bare["px_per_s"], report.FOUND: 80.0}}
    avx2_ops = {"px_per_s": {"fp32": 60.0, report.FOUND: 40.0, "onnx": 160.0}}
    again = {t["target"]: t for t in report.targets(_rows(), ops, "fp32", avx2_ops, ("torch",))}
    today = again["fastest kept fp32 path (fp32) / fp32 as issue 36 found it channels_last, this CPU"]
    assert today["ratio"] == pytest.approx(1.25) and today["met"] is False
    emulated = again["fastest kept fp32 path / fp32 eager as issue 36 found it, AVX2-only CPU"]
    assert emulated["met"] is None and "held to AVX2 on this CPU" in emulated["why"] and "1.50x" in emulated["why"]
    res = {
        "date_utc": "d", "host": "h", "cpu_cores": 2, "torch": "t", "threads": 2, "model": "m", "precision": "fp32",
        "block": 1024, "halo": 48, "shard": 1024, "load_avg_start": [1, 1, 1], "load_avg_end": [1, 1, 1],
        "total_seconds": 60, "bare_forward": {**bare, "load": 1.0}, "rows": _rows(), "targets": list(out.values()),
        "cpu": {"model": "EPYC", "flags": ["avx2", "fma"], "torch_capability": "AVX2"},
        "bare_forward_avx2_emulated": avx2, "isa_env": {"ATEN_CPU_CAPABILITY": "avx2"},
    }  # fmt: skip
    report.report(res)
    text = capsys.readouterr().out
    assert "flags avx2 fma" in text and "NOT MEASURED" in text and "MISSED" in text and "MET" in text
    assert "onnx fp32 / torch fp32" in text and "texture layer" in text


def test_cpu_info_names_this_cpus_flags(bench):
    _, workers = bench
    info = workers.cpu_info()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        line = next(x for x in cpuinfo.read_text().splitlines() if x.startswith("flags"))
        flags = set(line.split(":", 1)[1].split())
        assert set(info["flags"]) <= flags and ("avx2" in info["flags"]) == ("avx2" in flags)
    assert info["torch_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "NO AVX")


def test_allocator_lines_compare_kept_memory_with_glibcs_defaults(bench):
    report, _ = bench
    res = {
        "bare_forward": {"px_per_s": {"fp32": 150.0, "bf16": 300.0, "fp32 system malloc": 100.0}},
        "bare_forward_avx2_emulated": {"px_per_s": {"fp32": 120.0, "fp32 system malloc": 100.0, "onnx": 90.0}},
    }
    assert report.allocator_lines(res) == [
        "bare forward, freed memory kept / glibc's defaults (this CPU): fp32 1.50x",
        "bare forward, freed memory kept / glibc's defaults (held to AVX2): fp32 1.20x",
    ]
    assert report.allocator_lines({"bare_forward": {"px_per_s": {"fp32": 1.0}}}) == []
