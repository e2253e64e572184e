"""An honest client: trains the global model on its own data and reports truthfully."""

from __future__ import annotations

from dataclasses import dataclass

from clients.base import ClientUpdate, TrainingJob
from fl_poison.core.training import train_locally


@dataclass(frozen=True)
class BenignClient:
    """Local training with the configured optimizer (and FedProx term when mu > 0).

    Parameters
    ----------
    malicious : bool
        True for an attacker that sits this round out (it trains honestly; forensics still
        know it is an attacker).
    """

    malicious: bool = False

    def run(self, job: TrainingJob) -> ClientUpdate:
        """Train ``job.model`` on ``job.data`` and report its loss and example count."""
        loss = train_locally(job.model, job.data, job.training, job.device, job.seed)
        return ClientUpdate(model=job.model, train_loss=loss, num_examples=len(job.data), malicious=self.malicious)
