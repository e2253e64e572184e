"""The two Flower apps and what they share: the catalogue of registered attacks and defenses.

This layer imports the core, :mod:`clients` and :mod:`strategies`; only the launcher, the sweep
tools and the command line import it.
"""
