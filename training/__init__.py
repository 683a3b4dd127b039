"""earth-embed training (not part of the installed library), by role; imports only go down:

``pretrain.py`` / ``finetune.py`` (the documented scripts) > ``experiments/`` (drivers; nothing imports them) >
``release/`` > ``recipe/`` (pre-training and fine-tuning) > ``evaluation/`` (metrics, probes) > ``data/``
(what training reads and writes on disk). ``lint-imports`` checks the order (``pyproject.toml``).
"""

from earth_embed.registry import register_architecture

# Experimental architectures of the recipes (never released), registered for every training module:
# - the stride-16 model with a decoder as wide as the 64-d embedding at the output (its 32-channel release
#   decoder gives a 64-d embedding of rank <= 32);
# - the texture layer with the 5 px window only (on release 4 the 15 px block carried austria-ben-v2 and cost
#   slovenia-eolearn and brandenburg-osm: docs/archive/results-notebook.md).
EXPERIMENTAL_ARCHITECTURES = {
    "unet-resnet18-s16-fr": {
        "backbone": "resnet18",
        "backbone_out_indices": [0, 1, 2, 3],
        "decoder_channels": [128, 64, 64, 64],
    },
    "unet-resnet18-s16-ls5": {
        "backbone": "resnet18",
        "backbone_out_indices": [0, 1, 2, 3],
        "decoder_channels": [128, 64, 32, 32],
        "local_stats": [5],
    },
}
for _name, _spec in EXPERIMENTAL_ARCHITECTURES.items():
    register_architecture(_name, _spec)
