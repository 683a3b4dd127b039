"""Release tools: export a checkpoint as an encoder folder, build the released model folders and their cards,
plot a run. Imports the recipe, evaluation and data layers; nothing below imports it.
"""
