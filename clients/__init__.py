"""Client behaviours: what a client does with the global model and its data in a round.

A behaviour is chosen per client and round by :func:`clients.registry.behaviour_for`. Benign
clients train honestly (:mod:`clients.benign`); each attack is one module of
:mod:`clients.attacks` that declares an :class:`~clients.spec.AttackSpec`: a data poisoner or an
update transform (composed by :class:`clients.malicious.MaliciousClient`), or a whole behaviour,
all behind the same :class:`clients.base.ClientBehaviour` interface, so one ClientApp serves
simulation and real SuperNodes.
"""
