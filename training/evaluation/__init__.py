"""Scoring encoders: segmentation metrics, hand-made per-pixel features, linear probes (and probe-based model
selection), collapse checks, and the results files and statistics of experiments. Imports ``training.data`` only.
"""
