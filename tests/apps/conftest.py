"""Fixtures of the change tests: a real OSCD city pair (Mumbai, both dates) as scenes and embeddings."""

from __future__ import annotations

import pytest

from earth_embed import EarthEncoder
from earth_embed.api import embed_raster
from earth_embed.released import find_released
from tests.helpers.change_data import MUMBAI, crop_labels, write_crop

SIZE = 256


@pytest.fixture(scope="module")
def encoder_name() -> str:
    name = find_released("encoder")
    assert name is not None, "the released encoder (models/) is part of the repository"
    return name


@pytest.fixture(scope="module")
def mumbai(shared_data, tmp_path_factory, encoder_name):
    """Both dates of a 256 px Mumbai crop (7 % labelled change): scenes, float16 embeddings, labels."""
    root = tmp_path_factory.mktemp("mumbai")
    city, r0, c0 = MUMBAI
    enc = EarthEncoder.from_pretrained(encoder_name)
    out = {"root": root, "y": crop_labels(shared_data, city, r0, c0, SIZE), "encoder": enc}
    for key, date in (("a", "oscd-date1"), ("b", "oscd")):
        out[f"scene_{key}"] = write_crop(shared_data, date, city, r0, c0, SIZE, root / f"{key}.tif")
        # no cloud mask: the scores are compared on every pixel (ukis-csmask calls some bright roofs cloud)
        out[f"emb_{key}"] = embed_raster(enc, out[f"scene_{key}"], root / f"emb_{key}.tif", progress=False, dtype="float16",
                                         model_id=encoder_name, mask="none")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def mumbai_still(mumbai, encoder_name):
    """A pair with no change: date A of the Mumbai crop against itself moved by 0.5 px along x (both sides
    resampled linearly, at x + 0.25 and x + 0.75), as scenes and float16 embeddings."""
    import numpy as np
    import rasterio

    root = mumbai["root"]
    with rasterio.open(mumbai["scene_a"]) as ds:
        dn, profile, names = ds.read().astype(np.float32), ds.profile, ds.descriptions
    left, right = dn[:, :, :-1], dn[:, :, 1:]
    out = {}
    for key, img in (("0", 0.75 * left + 0.25 * right), ("1", 0.25 * left + 0.75 * right)):
        path = root / f"still_{key}.tif"
        with rasterio.open(path, "w", **{**profile, "width": img.shape[2]}) as dst:
            dst.write(np.round(img).astype(np.uint16))
            for i, band in enumerate(names, start=1):
                dst.set_band_description(i, band)
        out[f"scene_{key}"] = path
        out[f"emb_{key}"] = embed_raster(mumbai["encoder"], path, root / f"still_emb_{key}.tif", progress=False,
                                         dtype="float16", model_id=encoder_name, mask="none")  # fmt: skip
    return out
