"""One module per attack; each cites its paper and ends with ``ATTACK = AttackSpec(...)``.

:func:`clients.registry.registered_attacks` imports every module of this package and collects
their ``ATTACK``: adding an attack means adding a module here (and its test), nothing else.
Primitives several attacks share live one level up (:mod:`clients.targeting`,
:mod:`clients.label_flipping`, :mod:`clients.triggers`, :mod:`clients.backdoors`,
:mod:`clients.update_transforms`).
"""
