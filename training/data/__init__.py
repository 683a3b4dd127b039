"""What training reads and writes on disk: unlabelled windows of Sentinel-2 scenes, labelled scenes, array
caches, pre-training checkpoints and model folders. The lowest layer of ``training/``: it imports none of the others.
"""
