"""Key pairs that authenticate SuperNodes to a SuperLink started with ``--enable-supernode-auth``.

Flower 1.41 expects an elliptic-curve key on a NIST curve: the SuperNode reads its private key
in OpenSSH format (``--auth-supernode-private-key node-0-auth.key``) and the SuperLink's operator
registers the public key, an OpenSSH ``ecdsa-sha2-nistp384`` line, with
``flwr supernode register node-0-auth.pub <connection>``. The SuperLink refuses a node whose key
is not registered.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fl_poison.deploy.certificates import write_secret


def write_node_key_pair(private_path: Path, public_path: Path, comment: str) -> None:
    """Create an ECDSA P-384 key pair; write the private key (OpenSSH, 0600) and the public key line.

    Parameters
    ----------
    private_path : Path
        Where the SuperNode's private key goes.
    public_path : Path
        Where its public key goes (the file ``flwr supernode register`` reads).
    comment : str
        Appended to the public key line to tell keys apart.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_secret(private_path, private)
    public_path.write_bytes(public + f" {comment}\n".encode())


def write_node_keys(out: Path, num_nodes: int) -> list[Path]:
    """Write ``node-<i>-auth.key`` and ``node-<i>-auth.pub`` for ``i`` in ``0 .. num_nodes-1`` into ``out``.

    Parameters
    ----------
    out : Path
        The folder to write into (created if missing).
    num_nodes : int
        How many key pairs.

    Returns
    -------
    list[Path]
        The public key files, in node order.
    """
    out.mkdir(parents=True, exist_ok=True)
    public_keys = []
    for index in range(num_nodes):
        public_path = out / f"node-{index}-auth.pub"
        write_node_key_pair(out / f"node-{index}-auth.key", public_path, f"fl-poison-node-{index}")
        public_keys.append(public_path)
    return public_keys
