"""Maps from frozen embeddings: few-shot land cover (:func:`fit`), similarity search (:func:`similar`)
and unsupervised clustering (:func:`cluster`), each streamed window by window into GeoTIFFs.

They need the ``apps`` extra (scikit-learn, pyogrio, shapely, matplotlib): ``pip install "earth-embed[apps]"``;
those libraries are imported on first use, so ``import earth_embed.apps`` stays light.
"""

from __future__ import annotations

from .cluster import cluster
from .fit import FitResult, fit
from .similar import similar

__all__ = ["FitResult", "cluster", "fit", "similar"]
