"""Region-scale embeddings: one chunk plan over many scenes, a fixed int8 rule, a Zarr store, engines.

The pieces and how an engine uses them::

    from earth_embed.region.plan import RegionPlan
    from earth_embed.region.store import RegionStore
    from earth_embed.region.engine import RunOptions, run_plan
    from earth_embed.region.unit import read_unit, compute_unit   # what an engine runs per unit

    plan = RegionPlan.from_scenes(scenes, model, chunk=256, shard=2048)   # groups per CRS, plan.units
    store = RegionStore.create("out.zarr", plan, model_id=name)          # or reopens it to resume
    summary = run_plan(plan, lambda: model, store, RunOptions(), engine="local")

    # inside an engine, for each unit in `units` (store.is_done(unit) already False):
    inputs = read_unit(plan, unit)                 # CPU: numpy windows, picklable
    codes = compute_unit(model, inputs, "int8")    # model: int8 (D, unit.height, unit.width)
    store.write_unit(unit, codes)                  # whole shard, then the registry entry

An engine is ``engine(plan, units, model_factory, sink, options) -> RunSummary`` registered in
:data:`earth_embed.region.engine.ENGINES` (see that module). ``quantize`` needs only numpy;
``plan`` rasterio; ``store`` imports zarr (``pip install "earth-embed[region]"``) when used, so
``import earth_embed`` stays slim.
"""
