"""Server strategies: Flower's built-in strategies, sampled by partition id and observed for forensics.

:func:`strategies.registry.build_strategy` maps the ``strategy`` setting to a strategy instance.
"""
