"""Importing flwr-datasets without paying for its plotting package.

Every ClientApp process on a real SuperNode starts from scratch, so what the apps import is paid
by every message. ``flwr_datasets/__init__.py`` runs ``from flwr_datasets import visualization``,
and that package imports seaborn, and through it scipy.stats and pandas: about 0.85 s of the
1.1 s that ``import flwr_datasets`` costs on a 2-core machine, for plots that neither the apps
nor the partitioners draw. :func:`defer_flwr_datasets_plotting` puts a *deferred* module for
``flwr_datasets.visualization`` into ``sys.modules`` before ``flwr_datasets`` is imported: the
package's own ``from flwr_datasets import visualization`` then binds that module, whose code runs
on the first read of one of its names (``flwr_datasets.visualization.plot_label_distributions``
works as before, only later).

Why not :class:`importlib.util.LazyLoader`: its module runs as soon as any attribute is read,
``__spec__`` included, and the import system reads ``__spec__`` of a module it finds in
``sys.modules`` while executing ``from flwr_datasets import visualization``, so seaborn would be
imported right away. :class:`DeferredModule` runs only when a name the module does not hold yet is
read (``__spec__``, ``__path__``, ``__file__`` are set when it is created).

Call :func:`defer_flwr_datasets_plotting` right before importing anything from ``flwr_datasets``
(it is idempotent and does nothing once ``flwr_datasets`` is imported).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

FLWR_DATASETS_PLOTTING = "flwr_datasets.visualization"


class DeferredModule(types.ModuleType):
    """A module created from its spec whose code runs on the first read of a name it does not hold yet.

    On that read the instance turns into a plain module (so that reads while its code runs do not
    come back here) and its loader executes it. When the execution fails, the module is taken
    out of ``sys.modules`` so that the next import tries again and raises the real error.

    Not safe against two threads reading the module for the first time at once (neither is
    :class:`importlib.util.LazyLoader` before Python 3.12); plots are drawn from one thread.
    """

    def __getattr__(self, name: str) -> object:
        spec = self.__spec__
        if spec is None or spec.loader is None:  # pragma: no cover - set by defer_submodule
            raise AttributeError(name)
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # a plain module from now on
        try:
            spec.loader.exec_module(self)
        except BaseException:
            sys.modules.pop(spec.name, None)
            raise
        return getattr(self, name)


def defer_submodule(name: str) -> bool:
    """Put a :class:`DeferredModule` for ``name`` into ``sys.modules``, before its package is imported.

    Parameters
    ----------
    name : str
        ``package.submodule`` of a top-level package (finding the submodule's spec must not
        import the package, so deeper names are not supported).

    Returns
    -------
    bool
        True when ``name`` is deferred now or already was; False when the package is imported
        already (its ``__init__`` has run its imports), when ``name`` is not of the form
        ``package.submodule``, or when either cannot be found (the ordinary import then behaves as
        it would have, errors included).
    """
    if isinstance(sys.modules.get(name), DeferredModule):
        return True
    package, _, child = name.partition(".")
    if not child or "." in child or package in sys.modules or name in sys.modules:
        return False
    package_spec = importlib.util.find_spec(package)
    if package_spec is None or not package_spec.submodule_search_locations:
        return False
    spec = importlib.machinery.PathFinder.find_spec(name, list(package_spec.submodule_search_locations))
    if spec is None or spec.loader is None:
        return False
    module = importlib.util.module_from_spec(spec)
    module.__class__ = DeferredModule
    sys.modules[name] = module
    return True


def defer_flwr_datasets_plotting() -> bool:
    """Defer ``flwr_datasets.visualization`` (seaborn, scipy, pandas) until a plot function is read.

    Call it right before importing anything from ``flwr_datasets``; see the module docstring.

    Returns
    -------
    bool
        Whether the plotting package is deferred (see :func:`defer_submodule`); False when
        ``flwr_datasets`` was imported before, which is harmless but pays the full import.
    """
    return defer_submodule(FLWR_DATASETS_PLOTTING)
