"""Tests of training/ (the recipes, evaluation, release tools and experiment drivers) on real pixels."""
