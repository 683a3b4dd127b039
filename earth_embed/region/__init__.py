"""Region-scale embeddings: one chunk plan over many scenes, a fixed int8 rule, a Zarr store, engines.

``quantize`` and ``plan`` need only numpy/rasterio/torch; ``store`` imports zarr (the ``region``
extra) when it is used, so ``import earth_embed`` stays slim.
"""
