"""The chunk plan and its engines: one tiling from a single scene to a multi-zone region.

- :mod:`.plan`: groups per CRS, work units (shards), compute blocks with a halo (geometry only);
- :mod:`.unit`: read a unit's input windows and compute its output (int8 codes + scales, floats or classes);
- :mod:`.engine`: the engine protocol, :class:`~.engine.RunOptions`, :func:`~.engine.run_plan`;
  :mod:`.engine_local` (reader thread, model, writer thread) and :mod:`.engine_ray` (Ray Data + actors).

A unit's output goes to a sink (:class:`~.engine.UnitSink`: ``is_done(unit)``, ``write_unit(unit, UnitOutput)``),
which the outputs layer implements (a GeoTIFF writer for one scene, the Zarr store for a region).
"""
