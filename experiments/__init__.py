"""Scripts that measure or compare fl_poison experiments (run with ``python -m experiments.<name>``)."""
