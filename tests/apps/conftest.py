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
