"""The Sentinel-2 MSI band table, band-name aliases and selection by name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BandError


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 MSI band."""

    name: str
    wavelength_nm: float  # central wavelength (S2A)
    resolution_m: int  # native ground sampling distance
    in_l1c: bool
    in_l2a: bool
    aliases: tuple[str, ...] = ()


S2_BANDS: dict[str, Band] = {
    b.name: b
    for b in [
        Band("B01", 443, 60, True, True, ("coastal", "coastal_aerosol", "aerosol")),
        Band("B02", 490, 10, True, True, ("blue",)),
        Band("B03", 560, 10, True, True, ("green",)),
        Band("B04", 665, 10, True, True, ("red",)),
        Band("B05", 705, 20, True, True, ("rededge1", "red_edge_1", "rededge70")),
        Band("B06", 740, 20, True, True, ("rededge2", "red_edge_2", "rededge74")),
        Band("B07", 783, 20, True, True, ("rededge3", "red_edge_3", "rededge78")),
        Band("B08", 842, 10, True, True, ("nir", "nir08")),
        Band("B8A", 865, 20, True, True, ("nir_narrow", "narrow_nir", "nir08a", "rededge4", "nir09a")),
        Band("B09", 945, 60, True, True, ("water_vapour", "water_vapor", "wv", "nir09")),
        Band("B10", 1375, 60, True, False, ("cirrus", "swir_cirrus")),
        Band("B11", 1610, 20, True, True, ("swir16", "swir1", "swir_1")),
        Band("B12", 2190, 20, True, True, ("swir22", "swir2", "swir_2")),
    ]
}

ALL_BANDS: list[str] = list(S2_BANDS)
L2A_BANDS: list[str] = [n for n, b in S2_BANDS.items() if b.in_l2a]
RGB_BANDS: list[str] = ["B04", "B03", "B02"]
#: The ten 10 m and 20 m bands that L1C and L2A products share: the release models' input.
RELEASE_BANDS: list[str] = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]

_ALIASES: dict[str, str] = {}
for _band in S2_BANDS.values():
    _ALIASES[_band.name.lower()] = _band.name
    for _alias in _band.aliases:
        _ALIASES[_alias.lower()] = _band.name

_NUMBERED = re.compile(r"^b0?(\d{1,2}|8a)$", re.IGNORECASE)


def canonical_band_name(name: str) -> str:
    """Return the canonical name ('B02', 'B8A', ...) of a band name or alias ('b2', 'blue', 'B8a')."""
    key = str(name).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    match = _NUMBERED.match(key)
    if match:
        number = match.group(1).upper()
        candidate = f"B{number}" if number == "8A" else f"B{int(number):02d}"
        if candidate in S2_BANDS:
            return candidate
    raise BandError(
        f"Unknown Sentinel-2 band name {name!r}. Use one of {', '.join(ALL_BANDS)} "
        f"or an alias such as 'blue', 'red', 'nir', 'swir16'."
    )


def canonical_band_names(names: Sequence[str]) -> list[str]:
    """Canonicalise a list of band names, refusing duplicates (and a bare string, which is not a list)."""
    if isinstance(names, (str, bytes)):
        raise BandError(
            f"Band names {names!r} were given as one string; pass a list such as ['B04', 'B03', 'B02'] "
            "(CLI: --bands B04 B03 B02)."
        )
    canon = [canonical_band_name(n) for n in names]
    duplicates = sorted({b for b in canon if canon.count(b) > 1})
    if duplicates:
        raise BandError(f"Bands listed more than once: {', '.join(duplicates)}. List each band once.")
    return canon


def select_bands(available: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Indices into ``available`` that give the bands ``wanted``, in the order of ``wanted``.

    Names may be aliases. Raises :class:`BandError` naming every missing band.
    """
    have = canonical_band_names(available)
    want = canonical_band_names(wanted)
    missing = [b for b in want if b not in have]
    if missing:
        raise BandError(
            f"Missing band(s) {', '.join(missing)}: the input has {', '.join(have) or 'no bands'} "
            f"but {', '.join(want)} are needed. Provide an input with these bands."
        )
    return [have.index(b) for b in want]


def wavelengths(names: Sequence[str]) -> list[float]:
    """Central wavelengths (nm) of the given bands."""
    return [S2_BANDS[canonical_band_name(n)].wavelength_nm for n in names]


#: Radiometric offset added to digital numbers from processing baseline 04.00 (25 January 2022).
BASELINE_04_OFFSET = -1000.0


def dn_offset_for_baseline(baseline: str | float | None) -> float:
    """The DN offset to add before scaling: -1000 for processing baseline >= 04.00, else 0.

    ``baseline`` is e.g. ``"04.00"``, ``"N0400"``, ``"02.09"`` or None (unknown: no offset).
    """
    if baseline is None:
        return 0.0
    text = str(baseline).strip().upper().lstrip("N")
    try:
        value = float(text) if "." in text else float(text) / 100.0
    except ValueError as err:
        raise BandError(f"Cannot parse processing baseline {baseline!r}; use a form like '04.00' or 'N0400'.") from err
    if value >= 99.0:  # N9999: reprocessed outside ESA's baselines; look at the data
        raise BandError(
            f"Processing baseline {baseline!r} does not say whether the -1000 offset applies; "
            "check the product metadata (BOA_ADD_OFFSET / RADIO_ADD_OFFSET) and pass dn_offset explicitly."
        )
    return BASELINE_04_OFFSET if value >= 4.0 else 0.0
