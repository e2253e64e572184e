"""The ``flwr`` CLI's connection to a SuperLink: a ``[superlink.<name>]`` table in ``$FLWR_HOME/config.toml``.

flwr 1.41 reads connections from ``$FLWR_HOME/config.toml`` (default ``~/.flwr``)::

    [superlink]
    default = "local"

    [superlink.lab]
    address = "10.0.0.5:8000"                 # the SuperLink's one HTTP port
    root-certificates = "/abs/path/ca.crt"    # TLS; or: insecure = true

and ``flwr run . lab``, ``flwr supernode register KEY.pub lab``, ``flwr list lab`` use the one
named. Writing a connection keeps the others (the file is parsed and written back, so comments
are lost) and creates the file with Flower's default connections when it is missing, so that
``fl-poison run`` still finds the local simulation SuperLink.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import tomli_w
from flwr.cli.constant import DEFAULT_FLOWER_CONFIG_TOML

CONFIG_FILE = "config.toml"


def flwr_home() -> Path:
    """``$FLWR_HOME``, or ``~/.flwr`` when it is not set (where the ``flwr`` CLI looks)."""
    return Path(os.environ.get("FLWR_HOME") or "~/.flwr").expanduser()


def write_connection(
    name: str,
    address: str,
    root_certificates: Path | None,
    make_default: bool = False,
    home: Path | None = None,
) -> Path:
    """Add or replace the connection ``name`` in ``config.toml`` and return the file's path.

    Parameters
    ----------
    name : str
        The connection's name (``flwr run . <name>``).
    address : str
        ``host:port`` of the SuperLink.
    root_certificates : Path | None
        The CA certificate that signed the SuperLink's certificate (stored as an absolute path);
        None for an insecure connection (``insecure = true``, a closed lab only).
    make_default : bool
        Also make it the default connection (then plain ``flwr run .`` and ``fl-poison run``
        use it).
    home : Path | None
        The Flower home folder; default :func:`flwr_home`.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"connection name {name!r}: use letters, digits, '-' and '_'")
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"address {address!r}: expected host:port, e.g. 10.0.0.5:8000")
    path = (home or flwr_home()) / CONFIG_FILE
    text = path.read_text() if path.is_file() else DEFAULT_FLOWER_CONFIG_TOML
    config = tomllib.loads(text)
    superlink = config.setdefault("superlink", {})
    connection: dict[str, object] = {"address": address}
    if root_certificates is None:
        connection["insecure"] = True
    else:
        certificate = root_certificates.expanduser().resolve()
        if not certificate.is_file():
            raise ValueError(f"root certificates {certificate}: no such file")
        connection["root-certificates"] = str(certificate)
    superlink[name] = connection
    if make_default:
        superlink["default"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(tomli_w.dumps(config))
    os.replace(temporary, path)
    return path
