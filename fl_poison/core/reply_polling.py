"""Send a round's messages and collect the replies as soon as they arrive.

Flower's grids wait a fixed time between two looks for replies: 0.1 s in simulation
(``InMemoryGrid``) and 3 s against a SuperLink (``HttpGrid``), so a round whose replies are all
in after 0.3 s ends after 0.4 s in simulation and after 3 s on real nodes. :func:`send_and_receive`
does the same through the grid's public ``push_messages`` / ``pull_messages``, looking again after
a short wait that grows while nothing arrives (from :data:`FIRST_WAIT` by :data:`WAIT_GROWTH` up to
:data:`LONGEST_WAIT`) and shrinks back when replies come in: a round costs its slowest client plus
at most ~10 ms in the common case, and an idle wait costs at most four looks a second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

FIRST_WAIT = 0.005
WAIT_GROWTH = 1.5
LONGEST_WAIT = 0.25


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float | None) -> list[Message]:
    """Push ``messages`` through ``grid`` and pull their replies until all are in or ``timeout`` passed.

    The same contract as Flower's ``Grid.send_and_receive``: the replies received in time, in
    arrival order (a message that gets no reply in time has none in the list).

    Parameters
    ----------
    grid : Grid
        The run's grid.
    messages : Iterable[Message]
        The messages to send.
    timeout : float | None
        Seconds to wait for the replies (None: until every reply is in).
    """
    pending = {message_id for message_id in grid.push_messages(messages) if message_id}
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    wait = FIRST_WAIT
    while pending:
        pulled = list(grid.pull_messages(list(pending)))
        replies.extend(pulled)
        pending.difference_update(message.metadata.reply_to_message_id for message in pulled)
        if not pending:
            break
        remaining = math.inf if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            break
        if pulled:
            wait = FIRST_WAIT
        time.sleep(min(wait, remaining))
        wait = min(wait * WAIT_GROWTH, LONGEST_WAIT)
    return replies
