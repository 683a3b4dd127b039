"""Every format earth-embed writes, written atomically and read back by the same layer.

- :mod:`.atomic`: temporary names, locks, fsync and verification shared by every writer;
- :mod:`.geotiff`: tiled, compressed GeoTIFFs (embeddings, scales, class maps);
- :mod:`.zarr_store` / :mod:`.zarr_groups`: the region store (Zarr v3, one group per CRS) and its layout;
- :mod:`.cog`: Cloud-Optimized GeoTIFFs exported from a store; :mod:`.stac`: the STAC catalogue;
- :mod:`.embeddings`: :func:`~.embeddings.open_embeddings`, one reader for all of them, decoded to float32.
"""
