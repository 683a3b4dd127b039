"""What a Sentinel-2 product says about itself: SAFE products (folder or zip) and their metadata.

A SAFE product holds its bands under ``GRANULE/<granule>/IMG_DATA/`` (Level-1C: ``*_B02.jp2``) or
``GRANULE/<granule>/IMG_DATA/R10m|R20m|R60m/`` (Level-2A: ``*_B02_10m.jp2``; each band is taken at its
finest resolution) and its radiometry in ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: the processing
baseline (``Product_Info/PROCESSING_BASELINE``), the quantification value and, from baseline 04.00
on, the offset added to every digital number (``Radiometric_Offset_List/RADIO_ADD_OFFSET`` in L1C,
``BOA_ADD_OFFSET_VALUES_LIST/BOA_ADD_OFFSET`` in L2A, one per ``band_id`` of
``Spectral_Information_List``). The same facts are also read from ``source.json``/``metadata.json``
sidecars, from GeoTIFF tags and from product names (``..._N0400_...``), so the DN offset applies
without a flag.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bands import ALL_BANDS, canonical_band_name, dn_offset_for_baseline
from ..errors import BandError, InputWarning, RasterInputError

#: Order of ``band_id`` 0..12 in the product metadata (when Spectral_Information_List is absent).
METADATA_BAND_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
#: L2A resolution folders, finest first.
L2A_RESOLUTION_DIRS = ("R10m", "R20m", "R60m")
SIDECARS = ("source.json", "metadata.json")
_DATE = re.compile(r"(?<!\d)(20\d{2})-?([01]\d)-?([0-3]\d)(?:T[\d:]{6,8})?")
_PRODUCT_BASELINE = re.compile(r"_N(\d{4})_")
_METADATA_XML = re.compile(r"^MTD_MSIL(1C|2A)\.xml$")


@dataclass
class ProductInfo:
    """Radiometric facts about a product; every field is None where nothing said it."""

    product_id: str | None = None
    level: str | None = None  # "L1C" or "L2A"
    baseline: str | None = None  # "04.00"
    offsets: dict[str, float] = field(default_factory=dict)  # band -> BOA/RADIO_ADD_OFFSET
    quantification: float | None = None
    source: str = ""  # where the facts were read
    date: str | None = None  # acquisition date YYYY-MM-DD (orders overlapping scenes; a store's time axis)

    def dn_offset(self, bands: list[str]) -> float | None:
        """The DN offset for ``bands``: the product's own offsets, else from the baseline, else None."""
        if self.offsets:
            values = {self.offsets[b] for b in bands if b in self.offsets} or set(self.offsets.values())
            if len(values) > 1:
                raise RasterInputError(
                    f"{self.source} gives different DN offsets per band ({self.offsets}); earth-embed applies one "
                    "offset to all bands. Pass dn_offset explicitly (CLI: --dn-offset)."
                )
            return values.pop()
        if self.baseline is not None:
            try:
                return dn_offset_for_baseline(self.baseline)
            except BandError:  # N9999 and the like: the baseline alone does not tell
                return None
        return None

    def describe(self) -> str:
        parts = [p for p in (self.product_id, self.level) if p]
        if self.baseline:
            parts.append(f"processing baseline {self.baseline}")
        return ", ".join(parts) or "no product metadata"

    def merged(self, other: ProductInfo) -> ProductInfo:
        """Fields of ``self``, filled in from ``other`` where ``self`` says nothing."""
        return ProductInfo(
            product_id=self.product_id or other.product_id,
            level=self.level or other.level,
            baseline=self.baseline or other.baseline,
            offsets=self.offsets or other.offsets,
            quantification=self.quantification if self.quantification is not None else other.quantification,
            date=self.date or other.date,
            source=self.source if (self.offsets or self.baseline) else (other.source or self.source),
        )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_product_xml(text: str | bytes, source: str = "MTD_MSI*.xml") -> ProductInfo:
    """Parse the product metadata file (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise RasterInputError(
            f"{source} is not readable XML ({err}); the product is incomplete: download it again."
        ) from err
    info = ProductInfo(source=source)
    band_of_id = dict(enumerate(METADATA_BAND_ORDER))
    offsets_by_id: dict[int, float] = {}
    for el in root.iter():
        tag, text_value = _local(el.tag), (el.text or "").strip()
        if tag == "PROCESSING_BASELINE" and text_value:
            info.baseline = text_value
        elif tag == "PRODUCT_URI" and text_value:
            info.product_id = text_value.removesuffix(".SAFE")
        elif tag == "PRODUCT_START_TIME" and text_value:
            info.date = acquisition_date(text_value)
        elif tag == "PROCESSING_LEVEL" and text_value:
            info.level = "L2A" if "2A" in text_value else "L1C" if "1C" in text_value else text_value
        elif tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE") and text_value:
            info.quantification = float(text_value)
        elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET") and text_value:
            offsets_by_id[int(el.get("band_id", "-1"))] = float(text_value)
        elif tag == "Spectral_Information" and el.get("bandId") is not None:
            try:
                band_of_id[int(el.get("bandId", "-1"))] = canonical_band_name(el.get("physicalBand", ""))
            except BandError:
                pass
    info.offsets = {band_of_id[i]: v for i, v in offsets_by_id.items() if i in band_of_id}
    if info.level is None:
        info.level = "L2A" if _local(root.tag).startswith("Level-2A") else "L1C" if "1C" in root.tag else None
    return info


def info_from_mapping(data: dict[str, Any], source: str) -> ProductInfo:
    """Facts from a sidecar (``source.json``) or GeoTIFF tags; keys are matched case-insensitively."""
    low = {str(k).lower(): v for k, v in data.items()}
    info = ProductInfo(source=source)
    for key in ("boa_add_offset", "radio_add_offset", "dn_offset"):
        if low.get(key) is not None:
            try:
                info.offsets = {b: float(low[key]) for b in ALL_BANDS}
            except (TypeError, ValueError):
                continue
            break
    baseline = low.get("processing_baseline")
    info.baseline = str(baseline) if baseline is not None else None
    product = low.get("product_id") or low.get("product_uri") or low.get("product_id_s2")
    if product:
        info.product_id = str(product).removesuffix(".SAFE")
        if info.baseline is None and (m := _PRODUCT_BASELINE.search(info.product_id + "_")):
            info.baseline = m.group(1)
    for key in ("datetime", "sensing_time", "acquisition_date", "date"):
        if low.get(key) is not None and (date := acquisition_date(str(low[key]))):
            info.date = date
            break
    level = low.get("level") or low.get("processing_level")
    if level:
        info.level = "L2A" if "2A" in str(level).upper() else "L1C" if "1C" in str(level).upper() else str(level)
    return info


def acquisition_date(text: str) -> str | None:
    """``YYYY-MM-DD`` of the first date in ``text`` (``20180319T053641``, ``2018-03-19T05:36:41Z``...), else None."""
    m = _DATE.search(text)
    return f"{m[1]}-{m[2]}-{m[3]}" if m else None


def info_from_name(path: str) -> ProductInfo:
    """The baseline named by a product-style path (``S2A_MSIL2A_20220706T085611_N0400_...``)."""
    m = _PRODUCT_BASELINE.search(Path(path).name + "_")
    return ProductInfo(baseline=m.group(1), source=f"the product name in {path}") if m else ProductInfo()


def info_from_sidecars(folder: str | os.PathLike) -> ProductInfo:
    """Facts from ``source.json`` / ``metadata.json`` in ``folder`` (unreadable sidecars are skipped)."""
    info = ProductInfo()
    for name in SIDECARS:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            info = info.merged(info_from_mapping(data, str(path)))
    return info


# -- SAFE layout ---------------------------------------------------------------------------------
def is_safe(path: str | os.PathLike) -> bool:
    """True for a SAFE product folder (holds ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml``, or band images under
    ``GRANULE/*/IMG_DATA`` when that file is missing) or its zip."""
    p = Path(path)
    if p.is_dir():
        return any(_METADATA_XML.match(e) for e in os.listdir(p)) or any(p.glob("GRANULE/*/IMG_DATA"))
    if p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        return any(_METADATA_XML.match(n.rsplit("/", 1)[-1]) or _granule_prefix(n) is not None for n in names)
    return False


def _granule_prefix(name: str) -> str | None:
    """The product folder part of a zip entry ``[PREFIX/]GRANULE/<granule>/IMG_DATA/...``, or None."""
    parts = name.split("/")
    if "GRANULE" in parts:
        i = parts.index("GRANULE")
        if len(parts) > i + 2 and parts[i + 2] == "IMG_DATA":
            return "/".join(parts[:i]) + "/" if i else ""
    return None


_WARNED: set[str] = set()  # products already warned about in this process


def _without_metadata(path: Path) -> ProductInfo:
    """What a product without its ``MTD_MSI*.xml`` can still say (its name), and a warning saying so."""
    info = info_from_name(str(path))
    if info.baseline is not None:
        consequence = f"the DN offset follows the processing baseline {info.baseline} in its name"
    else:
        consequence = (
            "nothing says its processing baseline: pass --dn-offset -1000 (Python: dn_offset=-1000) if it was "
            "processed with baseline 04.00 or later (January 2022 on)"
        )
    if str(path) in _WARNED:  # a run opens a scene several times (checks, plan, units): said once
        return info
    _WARNED.add(str(path))
    warnings.warn(
        f"{path} has no product metadata file (MTD_MSIL1C.xml / MTD_MSIL2A.xml); its band files under "
        f"GRANULE/*/IMG_DATA are read, and {consequence}. Download the product again to have the metadata.",
        InputWarning,
        stacklevel=4,
    )
    return info


def _pick_bands(names: list[str]) -> dict[str, str]:
    """Band -> entry among the image files of a product (L2A: the finest resolution folder wins)."""
    from .bandfiles import RASTER_SUFFIXES, band_from_filename

    found: dict[str, tuple[int, str]] = {}
    for name in names:
        parts = name.split("/")
        if "IMG_DATA" not in parts or not name.lower().endswith(RASTER_SUFFIXES):
            continue
        band = band_from_filename(parts[-1])
        if band is None:
            continue
        folder = parts[-2]
        rank = L2A_RESOLUTION_DIRS.index(folder) if folder in L2A_RESOLUTION_DIRS else 0
        if band not in found or rank < found[band][0]:
            found[band] = (rank, name)
    return {b: n for b, (_r, n) in found.items()}


def safe_band_files(path: str | os.PathLike) -> tuple[dict[str, str], ProductInfo]:
    """Band files (GDAL paths; ``/vsizip/`` inside a zip) and metadata of a SAFE product."""
    p = Path(path)
    xml_text: bytes | None = None
    if p.is_dir():
        names = [str(f.relative_to(p)).replace(os.sep, "/") for f in p.glob("GRANULE/*/IMG_DATA/**/*") if f.is_file()]
        xml_name = next((e for e in sorted(os.listdir(p)) if _METADATA_XML.match(e)), None)
        if xml_name is not None:
            xml_text = (p / xml_name).read_bytes()
        to_path = {n: str(p / n) for n in names}
        xml_source = str(p / (xml_name or "MTD_MSIL1C.xml"))
    else:
        with zipfile.ZipFile(p) as z:
            entries = z.namelist()
            xml_entry = next((n for n in sorted(entries) if _METADATA_XML.match(n.rsplit("/", 1)[-1])), None)
            if xml_entry is not None:
                xml_text = z.read(xml_entry)
        if xml_entry is not None:
            prefix = xml_entry.rsplit("/", 1)[0] + "/" if "/" in xml_entry else ""
        else:
            prefix = next(q for n in sorted(entries) if (q := _granule_prefix(n)) is not None)
        names = [n[len(prefix) :] for n in entries if n.startswith(prefix + "GRANULE/")]
        to_path = {n: f"/vsizip/{p.resolve()}/{prefix}{n}" for n in names}
        xml_source = f"{p}!{xml_entry or 'MTD_MSIL1C.xml'}"
    granules = sorted({n.split("/")[1] for n in names if n.count("/") >= 3 and "IMG_DATA" in n})
    if len(granules) > 1:
        raise RasterInputError(
            f"{path} holds {len(granules)} granules ({', '.join(granules[:4])}...); earth-embed reads one tile "
            "at a time. Pass one granule's IMG_DATA folder (or its band files) instead."
        )
    bands = _pick_bands(sorted(names))
    if not bands:
        raise RasterInputError(
            f"{path} looks like a SAFE product (it has "
            f"{xml_source.rsplit('/', 1)[-1] if xml_text is not None else 'GRANULE/*/IMG_DATA'}) but holds no band images "
            "under GRANULE/*/IMG_DATA; the download is incomplete: download the product again."
        )
    info = parse_product_xml(xml_text, xml_source) if xml_text is not None else _without_metadata(p)
    if info.product_id is None:
        info.product_id = p.name.removesuffix(".zip").removesuffix(".SAFE")
    return {b: to_path[n] for b, n in bands.items()}, info


__all__ = [
    "METADATA_BAND_ORDER",
    "ProductInfo",
    "info_from_mapping",
    "info_from_name",
    "info_from_sidecars",
    "is_safe",
    "parse_product_xml",
    "safe_band_files",
]
