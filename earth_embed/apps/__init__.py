"""Maps from frozen embeddings: few-shot land cover (:func:`fit`), similarity search (:func:`similar`),
unsupervised clustering (:func:`cluster`) and change between two dates (:func:`change`), each streamed
window by window into GeoTIFFs.

They need the ``apps`` extra (scikit-learn, pyogrio, shapely, matplotlib): ``pip install "earth-embed[apps]"``;
those libraries are imported on first use, so ``import earth_embed.apps`` stays light.
"""

from __future__ import annotations

from .change import ChangeResult, change
from .cluster import cluster
from .fit import FitResult, fit
from .similar import similar

__all__ = ["ChangeResult", "FitResult", "change", "cluster", "fit", "similar"]
