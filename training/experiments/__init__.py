"""Experiment drivers built on the training recipes."""
