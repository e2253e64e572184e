"""Helpers for real deployments: TLS certificates, node keys, the ``flwr`` connection, a local trial."""
