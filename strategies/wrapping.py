"""Checking the rule a pre-aggregator hands its updates to, and refusing chains of wrapped rules that loop.

A pre-aggregator (norm-clip, nnm, bucketing) names the rule it wraps in a setting of its own
(``clip-wrap``, ``nnm-wrap``, ``bucketing-wrap``), declared on its spec as ``wraps``. Nothing stops
a pre-aggregator from wrapping another one (nnm in front of norm-clip in front of Krum), so the
settings can form a loop (nnm -> bucketing -> nnm) that would build forever. :func:`check_wrapped_rule`
follows the chain from the pre-aggregator through every ``wraps`` setting and refuses a chain that
comes back to a rule already in it, in one line naming the setting at fault; then it runs the
wrapped rule's own check, on the number of rows the wrapped rule will see.
"""

from __future__ import annotations

import dataclasses

from fl_poison.core.catalogue import Catalogue
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError, Setting
from strategies.spec import DefenseSpec


def wrapped_chain(config: ExperimentConfig, catalogue: Catalogue, name: str) -> list[str]:
    """The rules from ``name`` through every ``wraps`` setting, up to the first rule that wraps none or a repeat.

    The last entry repeats an earlier one when the chain loops.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered defenses (an unregistered name raises :class:`ConfigError`).
    name : str
        Where the chain starts.
    """
    chain = [name]
    while True:
        spec = catalogue.defense(chain[-1])
        wraps = spec.wraps if isinstance(spec, DefenseSpec) else None
        if wraps is None:
            return chain
        following = config[wraps]
        looped = following in chain
        chain.append(following)
        if looped:
            return chain


def check_wrapped_rule(
    config: ExperimentConfig,
    catalogue: Catalogue,
    name: str,
    setting: Setting[str],
    rows: int | None = None,
) -> None:
    """The rule ``setting`` names is another registered defense, no chain of wrapped rules loops, and its check passes.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered defenses.
    name : str
        The pre-aggregator whose ``setting`` is checked.
    setting : Setting[str]
        Its setting naming the wrapped rule.
    rows : int | None
        The number of updates the wrapped rule sees per round when it differs from the clients per
        round (bucketing hands on one mean per bucket); its check then runs with that many clients
        per round. None: as many as the clients per round.

    Raises
    ------
    ConfigError
        Naming ``setting`` when it names this rule, no registered defense, or a rule whose chain
        comes back to a rule already in it; or the wrapped rule's own error (followed by the number
        of rows when ``rows`` is given).
    """
    wrapped = config[setting]
    allowed = [other for other in catalogue.defense_names() if other != name]
    if wrapped not in allowed:
        raise ConfigError.bad_value(setting.key, wrapped, " | ".join(allowed))
    chain = wrapped_chain(config, catalogue, name)
    if chain[-1] in chain[:-1]:
        raise ConfigError.bad_value(
            setting.key, wrapped, f"a rule whose chain of wrapped rules does not loop ({' -> '.join(chain)})"
        )
    inner = catalogue.defense(wrapped)
    if inner.check is None:
        return
    if rows is None:
        inner.check(config, catalogue)
        return
    try:
        inner.check(dataclasses.replace(config, clients_per_round=rows), catalogue)
    except ConfigError as error:
        raise ConfigError(f"{error} ({wrapped} behind {name} sees {rows} updates per round)") from None
