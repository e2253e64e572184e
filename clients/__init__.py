"""Client behaviours: what a client does with the global model and its data in a round.

A behaviour is chosen per client and round by :func:`clients.registry.behaviour_for`. Benign
clients train honestly; malicious behaviours (added by the attack issue) compose a
data-poisoning step with an update transform, all behind the same :class:`clients.base.ClientBehaviour`
interface, so one ClientApp serves simulation and real SuperNodes.
"""
