"""Audit of a trained global model (``fl-poison audit RUN_DIR``): evasion attacks, input defenses, backdoor forensics.

The audit runs after training, on a run folder's final model (``model.pt``) and its held-out test
set (the same data settings as the run; see :mod:`fl_poison.audit.loading`), or on every finished
cell of a sweep folder (:mod:`fl_poison.audit.sweep_audit`). It sits beside the Flower apps: it
reads the core and the registries (to parse the run's settings and find its trigger) and is read
by the CLI only; nothing the run itself executes imports it.

Modules: :mod:`~fl_poison.audit.loading` (the run's model and test set),
:mod:`~fl_poison.audit.evasion` (ART's evasion attacks), :mod:`~fl_poison.audit.input_defenses`
(Gaussian blur and ART's preprocessors), :mod:`~fl_poison.audit.detector` (ART's binary input
detector), :mod:`~fl_poison.audit.statistics` (confidence intervals of proportions), the backdoor
forensics :mod:`~fl_poison.audit.neural_cleanse`, :mod:`~fl_poison.audit.strip`,
:mod:`~fl_poison.audit.fine_pruning` and :mod:`~fl_poison.audit.activation_clustering`, wired by
:mod:`~fl_poison.audit.forensics` (the probed trigger, the server's rows),
:mod:`~fl_poison.audit.pipeline` (the audit's settings, parts and steps),
:mod:`~fl_poison.audit.report` (tables, figures and the atomic ``RUN_DIR/audit`` folder) and
:mod:`~fl_poison.audit.sweep_audit` (a sweep folder's cells, resumably, and ``audit_summary.csv``).
"""
