"""The core layer: configuration, data, models, training, weights, screening, forensics and results.

Nothing here imports :mod:`clients`, :mod:`strategies`, the Flower apps or the command line; every
layer above builds on it (``tests/test_layers.py`` checks the direction of every import).
"""
