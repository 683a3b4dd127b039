"""The jobs that tie inputs, tiling and outputs together: one scene to a GeoTIFF (:mod:`.scene`), many
scenes to a region store (:mod:`.region`). Their public verbs are re-exported by :mod:`earth_embed.api`."""
