"""Server defenses: one module per aggregation rule or pre-aggregator, each declaring ``DEFENSE``.

:func:`strategies.registry.registered_defenses` finds the declarations and
:func:`strategies.registry.build_strategy` builds the one the ``strategy`` setting names. Shared
code lives in modules without a ``DEFENSE``.
"""
