"""fl_poison: a federated-learning poisoning lab on Flower.

Layers, imported one way only: :mod:`fl_poison.core` ← :mod:`clients` and :mod:`strategies` ←
:mod:`fl_poison.apps` (the ServerApp and ClientApp) ← :mod:`fl_poison.launch` ← :mod:`experiments`
(sweeps, plots, reports) ← :mod:`fl_poison.cli` (the ``fl-poison`` command).
"""
