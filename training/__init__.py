"""earth-embed training (not part of the installed library), by role; imports only go down:

``pretrain.py`` / ``finetune.py`` (the documented scripts) > ``experiments/`` (drivers; nothing imports them) >
``release/`` > ``recipe/`` (pre-training and fine-tuning) > ``evaluation/`` (metrics, probes) > ``data/``
(what training reads and writes on disk). ``lint-imports`` checks the order (``pyproject.toml``).
"""
