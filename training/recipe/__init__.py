"""The pre-training and fine-tuning recipe: config, views, losses, model, objective, run folders, and the typed
entry points :func:`training.recipe.pretrain.pretrain` and :func:`training.recipe.finetune.finetune`.
Imports ``training.evaluation`` and ``training.data``.
"""
