"""Offline fine-tuning of end-to-end ASR acoustic models.

Layers, bottom up (each imports only the layers below it):
data -> model -> decode -> train -> export.
"""

__version__ = "0.1.0"
