"""Experiment drivers: each is run as ``python training/experiments/NAME.py`` and writes a results file.

Nothing imports them, not even each other (``lint-imports``): what two drivers share lives in ``training.evaluation``.
"""
