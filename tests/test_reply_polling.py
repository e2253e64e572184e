"""Collecting a round's replies: everything that arrives in time, as soon as it is in, with waits
that grow while nothing arrives and restart when something does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fl_poison.core import reply_polling
from fl_poison.core.reply_polling import FIRST_WAIT, LONGEST_WAIT, WAIT_GROWTH, send_and_receive


def reply_to(message_id: str) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=message_id))


class ScriptedGrid:
    """Replies become available at given pull numbers (the n-th call of pull_messages)."""

    def __init__(self, ready_at: dict[str, int], refuse: tuple[str, ...] = ()) -> None:
        self.ready_at = ready_at
        self.refuse = refuse
        self.pulls = 0
        self.delivered: set[str] = set()

    def push_messages(self, messages):
        return ["" if message in self.refuse else f"id-{message}" for message in messages]

    def pull_messages(self, message_ids):
        self.pulls += 1
        ready = [
            message_id
            for message_id in message_ids
            if self.ready_at[message_id] <= self.pulls and message_id not in self.delivered
        ]
        self.delivered.update(ready)
        return [reply_to(message_id) for message_id in ready]


@pytest.fixture
def clock(monkeypatch):
    """A fake clock: time.sleep advances time.monotonic; the sleeps are recorded."""
    state = SimpleNamespace(now=100.0, sleeps=[])

    def sleep(seconds):
        state.sleeps.append(seconds)
        state.now += seconds

    monkeypatch.setattr(reply_polling.time, "sleep", sleep)
    monkeypatch.setattr(reply_polling.time, "monotonic", lambda: state.now)
    return state


def test_every_reply_is_collected_and_the_waits_grow_only_while_nothing_arrives(clock):
    grid = ScriptedGrid({"id-a": 1, "id-b": 4, "id-c": 5})
    replies = send_and_receive(grid, ["a", "b", "c"], timeout=10.0)
    assert [r.metadata.reply_to_message_id for r in replies] == ["id-a", "id-b", "id-c"]
    assert grid.pulls == 5
    # pull 1 brought a reply: first wait; pulls 2 and 3 brought nothing: growing; pull 4 brought one: first wait again
    assert clock.sleeps == pytest.approx(
        [FIRST_WAIT, FIRST_WAIT * WAIT_GROWTH, FIRST_WAIT * WAIT_GROWTH**2, FIRST_WAIT]
    )


def test_waits_stop_growing_at_the_longest_wait_and_the_timeout_ends_the_collection(clock):
    grid = ScriptedGrid({"id-a": 1, "id-b": 10**9})
    replies = send_and_receive(grid, ["a", "b"], timeout=3.0)
    assert [r.metadata.reply_to_message_id for r in replies] == ["id-a"]
    assert max(clock.sleeps) == LONGEST_WAIT
    assert sum(clock.sleeps) == pytest.approx(3.0)  # the last wait is cut to what was left of the timeout
    assert clock.now == pytest.approx(103.0)


def test_a_message_the_grid_refused_is_not_waited_for(clock):
    grid = ScriptedGrid({"id-a": 2}, refuse=("b",))
    replies = send_and_receive(grid, ["a", "b"], timeout=None)
    assert [r.metadata.reply_to_message_id for r in replies] == ["id-a"]
    assert clock.sleeps == [FIRST_WAIT]


def test_nothing_sent_means_no_pull(clock):
    grid = ScriptedGrid({})
    assert send_and_receive(grid, [], timeout=1.0) == []
    assert grid.pulls == 0
