"""``earth-embed verify STORE [--repair]``: a full check of a region store, and the repair of what fails.

:func:`verify_store` holds the store's lock, checks every metadata file, every finished unit's shard files
(SHA-256 against the registry) and chunks (decoded), and returns a
:class:`~earth_embed.outputs.zarr_verify.StoreReport`. With ``repair=True`` it forgets the damaged units and
runs the store's recorded recipe (``_units/run.json``: scenes, model and sizes, paths relative to the
store's folder) again, which rewrites damaged metadata and computes exactly the units that are not intact;
then it checks again. :func:`verify_embeddings` checks a GeoTIFF or COG of embeddings the same way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..inputs.spec import SceneSpec
from ..outputs.provenance import resolve_href
from ..outputs.zarr_cleanup import remove_leftovers, store_lock
from ..outputs.zarr_store import RegionStore
from ..outputs.zarr_verify import StoreReport, check_store, reset_units
from .region import RECIPE_KEYS, _embed_locked


def recipe_call(store: Path, recipe: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """Keyword arguments of the run that made ``store``, from its recipe (``model`` replaces a model object)."""
    base = store.parent

    def path(p: Any) -> Any:
        return str(resolve_href(p, base)) if isinstance(p, str) else tuple(str(resolve_href(q, base)) for q in p)

    scenes = []
    for s in recipe.get("scenes", []):
        bands = tuple(s["bands"]) if s.get("bands") else None
        scenes.append(
            SceneSpec.of(SceneSpec(path(s["source"]), bands, s.get("date"), s.get("dn_offset"), s.get("name", "")))
        )
    missing = [
        str(s.source)
        for s in scenes
        if not all(Path(q).exists() for q in ([s.source] if isinstance(s.source, str) else s.source))
    ]
    if missing:
        raise OutputError(
            f"The scenes {store} was made from are not where its recipe says ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}). Run the same `earth-embed embed-region SCENES {store}` command "
            "with the scenes where they are now: it recomputes exactly the units that are not intact."
        )
    given = recipe.get("model") or {}
    if model is None and "object" in given:
        raise OutputError(
            f"{store} was made with a model object ({given['object']}); pass it again: "
            "verify_store(store, repair=True, model=...)."
        )
    if model is None and "path" in given:
        model = str(resolve_href(given["path"], base))
        if not Path(model).exists():
            raise OutputError(
                f"The model folder {store} was made with is not where its recipe says ({model}); pass it: "
                "earth-embed verify STORE --repair --model FOLDER (Python: model=...)."
            )
    elif model is None:
        model = given.get("hub")  # a Hub id, or None: the released encoder
    call = {k: recipe[k] for k in (*RECIPE_KEYS, "keep") if k in recipe}
    call.setdefault("keep", "latest")  # recorded only when a store keeps every date
    call.setdefault("precision", "fp32")  # what ran before precision was recorded
    call.setdefault("runtime", "torch")  # what ran before the runtime was recorded
    root = recipe.get("scene_root")
    call.update(
        scenes=scenes,
        model=model,
        scene_root=str(resolve_href(root, base)) if root else None,
        engine="local",
        workers=None,
        address=None,
        ray_timeout=None,
        ray_env=None,
        cog_dir=None,
        stac_dir=None,
        overwrite=False,
    )
    return call


def verify_store(
    store: str | os.PathLike,
    repair: bool = False,
    *,
    model: Any = None,
    device: str | None = None,
    progress: bool = True,
) -> StoreReport:
    """Check the region store ``store`` in full (see the module doc); with ``repair``, recompute what fails.

    Returns the report (after the repair, the report of the repaired store, whose ``repaired`` says what
    was done). Raises :class:`OutputError` when another run holds the store or a repair cannot be run.
    """
    p = Path(store)
    with store_lock(p, clean=repair):
        report = check_store(p)
        if not repair or (report.ok and (report.planned is None or len(report.units) >= report.planned)):
            return report
        t0 = time.perf_counter()
        damaged = [u.key for u in report.failed]
        reset_units(p, damaged)
        recipe = RegionStore(p).recipe()
        if not recipe:
            raise OutputError(
                f"{len(damaged)} damaged unit(s) of {p} were reset, but the store records no recipe (it was made "
                f"by an earlier earth-embed): run the same `earth-embed embed-region SCENES {p}` command again to "
                "compute them."
            )
        call = recipe_call(p, recipe, model)
        run = _recompute(p, call, recipe, device, progress)
        remove_leftovers(p)
        after = check_store(p)
        after.repaired = [
            f"repaired in {time.perf_counter() - t0:.1f} s: {len(damaged)} damaged unit(s) reset"
            + (", metadata rewritten" if report.metadata_error else "")
            + f"; {run.summary}"
        ]
        return after


def _recompute(store: Path, call: dict[str, Any], recipe: dict[str, Any], device: str | None, progress: bool) -> Any:
    """Run the recipe with the recorded device and thread count (the same floats as the units around)."""
    import torch

    threads = torch.get_num_threads()
    if recipe.get("threads"):
        torch.set_num_threads(int(recipe["threads"]))
    try:
        scenes, model = call.pop("scenes"), call.pop("model")
        return _embed_locked(
            scenes, store, model, repair=True, device=device or recipe.get("device"), progress=progress, **call
        )
    finally:
        torch.set_num_threads(threads)


def verify_embeddings(path: str | os.PathLike) -> str:
    """Open a GeoTIFF/COG of embeddings (codes bound to their scales, files whole) and decode every window;
    returns a one-line report, raises :class:`~earth_embed.errors.RasterInputError` naming what is wrong."""
    from ..outputs.embeddings import open_embeddings

    t0 = time.perf_counter()
    with open_embeddings(path) as emb:
        valid = 0
        for win in emb.windows():
            valid += int(np.isfinite(emb.read(win)).all(axis=0).sum())
        return (
            f"{path}: {emb.height} x {emb.width} px, {emb.dim} bands, {valid} valid pixel(s); every block read and "
            f"decoded in {time.perf_counter() - t0:.1f} s"
        )


__all__ = ["recipe_call", "verify_embeddings", "verify_store"]
