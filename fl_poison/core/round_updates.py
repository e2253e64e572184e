"""The replies of one round, decoded once into a matrix of updates that screening, forensics and
defenses all read.

:func:`decode_round` reads every reply's arrays straight from their serialized bytes (no copy),
checks them (:mod:`fl_poison.core.reply_checks`) and writes the update ``w_client - w_global`` of
every usable reply into one row of an ``(n, d)`` float32 matrix (:class:`RoundUpdates`), in the
order of the replies (the strategy sorts them by partition id). The same pass gives each reply's
update norm (float64 accumulation) for ``clients.csv``.

Precision. The update of a coordinate is the IEEE float32 subtraction ``w_client - w_global`` of
two float32 values: the exact difference, rounded once to float32. That is the difference taken
in float64 (exact unless the two exponents are more than 29 apart) and then stored in float32.
Its rounding error is at most half an ulp of the *update*, far below the ulp of the weights it
came from when updates are small.
Everything computed from the matrix (norms, distances, sums) accumulates in float64.

Only floating-point arrays enter the matrix (a model's integer buffers would dominate norms and
distances); any other array of the global model is carried over unchanged by :meth:`UpdateLayout.apply`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict

from fl_poison.core.reply_checks import (
    array_problem,
    envelope_problem,
    metrics_problem,
    non_finite_problem,
    unreadable_problem,
)

# Coordinates per block when rows are processed blockwise in float64: 65,536 keeps a block of
# 100 rows at 50 MB and bounds the float64 rounding error of a blockwise dot product by
# 65,536 × 2^-53 ≈ 7.3e-12 of the sum of absolute products (see strategies/distances.py).
COORDINATE_BLOCK = 65_536


@dataclass(frozen=True)
class ArraySlot:
    """Where one float array of the model lies in a flat update row.

    Attributes
    ----------
    name : str
        The array's name in the ArrayRecord.
    shape : tuple[int, ...]
        Its shape.
    start, stop : int
        Its coordinates in the row.
    """

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int


@dataclass(frozen=True)
class UpdateLayout:
    """The global model's arrays, and where the floating-point ones lie in an update row.

    Parameters
    ----------
    global_arrays : Mapping[str, np.ndarray]
        The global model sent this round, by name (the order is the row order).
    """

    global_arrays: Mapping[str, np.ndarray]
    slots: tuple[ArraySlot, ...] = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        slots, offset = [], 0
        for name, array in self.global_arrays.items():
            if np.issubdtype(array.dtype, np.floating):
                slots.append(ArraySlot(name, tuple(array.shape), offset, offset + array.size))
                offset += array.size
        object.__setattr__(self, "slots", tuple(slots))
        object.__setattr__(self, "size", offset)

    def apply(self, update: torch.Tensor) -> ArrayRecord:
        """The global model plus ``update`` (a float64 vector of :attr:`size`), in each array's dtype.

        The sum is taken in float64 and rounded once to the array's dtype; arrays outside the
        update (integer buffers) are the global model's.
        """
        values = update.detach().to("cpu", torch.float64).numpy()
        slot_of = {slot.name: slot for slot in self.slots}
        arrays = {}
        for name, base in self.global_arrays.items():
            slot = slot_of.get(name)
            if slot is None:
                arrays[name] = Array(np.array(base, copy=True))
                continue
            total = base.astype(np.float64) + values[slot.start : slot.stop].reshape(slot.shape)
            arrays[name] = Array(np.asarray(total.astype(base.dtype)))
        return ArrayRecord(arrays)

    def float_arrays_of(self, record: ArrayRecord) -> ArrayRecord:
        """The global model with its float arrays replaced by those of ``record``, as sent (bit for bit)."""
        floats = {slot.name for slot in self.slots}
        return ArrayRecord(
            {
                name: record[name] if name in floats else Array(np.array(base, copy=True))
                for name, base in self.global_arrays.items()
            }
        )


@dataclass(frozen=True)
class ScreenedReply:
    """What the screening found in one reply.

    Attributes
    ----------
    partition_id : int
        The client.
    status : str
        ``ok`` (its update is a row of the round's :class:`RoundUpdates`), ``rejected`` (malformed
        or non-finite) or ``failed`` (an error reply).
    reason : str
        Why it was rejected or failed (empty when ok).
    norm : float
        L2 norm of its float update (float64 accumulation); NaN or inf when the update holds
        non-finite values, NaN when the reply is malformed otherwise (as before the decoding was
        shared).
    metrics : Mapping[str, object]
        Its MetricRecord's values (empty when it has none).
    """

    partition_id: int
    status: str
    reason: str
    norm: float
    metrics: Mapping[str, object]


@dataclass(frozen=True)
class RoundUpdates:
    """The usable replies of one round as rows of one matrix, in partition-id order.

    Row ``i`` as a defense sees it is ``scale[i] * matrix[i]``: a pre-aggregator rescales rows
    (norm clipping) by handing on a copy with another ``scale`` (:meth:`rescaled`), without
    touching the matrix.

    Attributes
    ----------
    matrix : torch.Tensor
        ``(n, d)`` float32 updates ``w_client - w_global`` on the aggregation device.
    scale : torch.Tensor
        ``(n,)`` float64 factors of the rows (ones after decoding).
    norms : torch.Tensor
        ``(n,)`` float64 L2 norms of the matrix rows (before scaling; ``norm_before``).
    partition_ids : tuple[int, ...]
        The client of every row.
    num_examples : tuple[float, ...]
        The example count every client's weight is computed from: as reported after decoding,
        as ``client-weighting`` decides once the strategy has applied it (:meth:`weighted`).
    reported_examples : tuple[float, ...]
        The example count every client reported.
    losses : tuple[float, ...]
        The training loss every client reported.
    contents : tuple[RecordDict, ...]
        The reply contents (their MetricRecords are averaged for the round's train metrics).
    arrays : tuple[ArrayRecord, ...]
        Every row's ArrayRecord as the client sent it.
    layout : UpdateLayout
        The global model and where its float arrays lie in a row.
    server_round : int
        The round the replies answer (0 when not known: decoded outside a strategy).
    """

    matrix: torch.Tensor
    scale: torch.Tensor
    norms: torch.Tensor
    partition_ids: tuple[int, ...]
    num_examples: tuple[float, ...]
    reported_examples: tuple[float, ...]
    losses: tuple[float, ...]
    contents: tuple[RecordDict, ...]
    arrays: tuple[ArrayRecord, ...]
    layout: UpdateLayout
    server_round: int = 0

    @property
    def count(self) -> int:
        """Number of rows (usable replies)."""
        return int(self.matrix.shape[0])

    @property
    def size(self) -> int:
        """Number of coordinates of a row."""
        return int(self.matrix.shape[1])

    @property
    def device(self) -> torch.device:
        """Where the matrix lives (and blocks are computed)."""
        return self.matrix.device

    def scaled_norms(self) -> torch.Tensor:
        """``(n,)`` float64 norms of the rows as a defense sees them (``scale * norms``)."""
        return self.scale * self.norms

    def rescaled(self, scale: torch.Tensor) -> RoundUpdates:
        """The same rows with other factors (a float64 tensor of :attr:`count` values)."""
        return replace(self, scale=scale.to(self.scale.device, torch.float64))

    def weighted(self, counts: Sequence[float]) -> RoundUpdates:
        """The same rows whose weights come from ``counts`` (one float per row; the reports are kept)."""
        if len(counts) != self.count:
            raise ValueError(f"{len(counts)} counts for {self.count} rows")
        return replace(self, num_examples=tuple(float(count) for count in counts))

    def unscaled(self, rows: Sequence[int]) -> bool:
        """Whether every row of ``rows`` has factor exactly 1."""
        return bool(torch.all(self.scale[list(rows)] == 1.0)) if rows else True

    def blocks(
        self, rows: Sequence[int] | None = None, size: int = COORDINATE_BLOCK
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, values)`` over the coordinates, ``values`` the float64 ``(len(rows), stop - start)``
        block of ``scale[i] * matrix[i, start:stop]`` for the rows (all rows when None), on :attr:`device`.

        ``values`` is a view of one buffer reused for every block (fresh multi-megabyte allocations
        per block cost more than the arithmetic on them): callers may modify it in place but must
        not keep it past the next iteration.

        Parameters
        ----------
        rows : Sequence[int] | None
            Row indices, in the order the block's rows should have.
        size : int
            Coordinates per block.
        """
        index = None if rows is None else torch.as_tensor(list(rows), dtype=torch.long, device=self.device)
        factors = self.scale if index is None else self.scale[index]
        uniform = bool(torch.all(factors == 1.0))
        buffer = torch.empty((len(factors), min(size, self.size)), dtype=torch.float64, device=self.device)
        on_cpu = self.device.type == "cpu"
        column = factors.cpu().numpy()[:, None]
        for start, stop, part in self.float32_blocks(rows, size):
            values = buffer[:, : stop - start]
            if on_cpu:  # numpy: one thread, no waiting on a second core that another process may hold
                target = values.numpy()
                np.copyto(target, part.numpy())
                if not uniform:
                    np.multiply(target, column, out=target)
            else:
                values.copy_(part)
                if not uniform:
                    values.mul_(factors[:, None])
            yield start, stop, values

    def float32_blocks(
        self, rows: Sequence[int] | None = None, size: int = COORDINATE_BLOCK
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Like :meth:`blocks`, but the float32 matrix values themselves, without the row factors.

        With all rows, ``values`` is a view of the matrix; with some, a view of a reused buffer
        (modify neither, keep neither past the next iteration).
        """
        index = None if rows is None else torch.as_tensor(list(rows), dtype=torch.long, device=self.device)
        gathered = None
        for start in range(0, self.size, size):
            stop = min(start + size, self.size)
            if index is None:
                yield start, stop, self.matrix[:, start:stop]
                continue
            if gathered is None or gathered.shape[1] != stop - start:
                gathered = torch.empty((len(index), stop - start), dtype=torch.float32, device=self.device)
            if self.device.type == "cpu":  # row by row: np.take on the strided block copies all of it first
                target, source = gathered.numpy(), self.matrix[:, start:stop].numpy()
                for position, row in enumerate(index.tolist()):
                    target[position] = source[row]
            else:
                torch.index_select(self.matrix[:, start:stop], 0, index, out=gathered)
            yield start, stop, gathered


def npy_payload(array: Array) -> np.ndarray:
    """The values of a Flower :class:`~flwr.app.Array` as a read-only numpy view of its bytes (no copy).

    Falls back to :meth:`Array.numpy` (a copy) for Fortran-ordered payloads.

    Raises
    ------
    ValueError, TypeError
        When the bytes are not a numpy ``.npy`` payload.
    """
    if array.stype != "numpy.ndarray":
        raise TypeError(f"serialization type {array.stype!r}")
    buffer = io.BytesIO(array.data)
    version = np.lib.format.read_magic(buffer)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(buffer)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(buffer)
    if fortran_order or dtype.hasobject:
        return array.numpy()
    count = math.prod(shape)
    return np.frombuffer(array.data, dtype=dtype, count=count, offset=buffer.tell()).reshape(shape)


def _metric_values(message: Message) -> Mapping[str, object]:
    if message.has_error():
        return {}
    record = next(iter(message.content.metric_records.values()), None)
    return dict(record) if record is not None else {}


def _number(metrics: Mapping[str, object], key: str) -> float:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def decode_round(
    replies: Sequence[Message],
    global_arrays: Mapping[str, np.ndarray],
    partition_of: Callable[[Message], int],
    device: torch.device | str = "cpu",
    workspace: torch.Tensor | None = None,
    server_round: int = 0,
) -> tuple[RoundUpdates, list[ScreenedReply]]:
    """Screen ``replies`` and decode the usable ones into a :class:`RoundUpdates`, each read once.

    Parameters
    ----------
    replies : Sequence[Message]
        The round's replies, in the order rows should have (partition-id order).
    global_arrays : Mapping[str, np.ndarray]
        The global model the round started from.
    partition_of : Callable[[Message], int]
        The partition id of a reply's sender.
    device : torch.device | str
        Where the matrix is kept (a CUDA device when the server has one).
    workspace : torch.Tensor | None
        A float32 tensor on ``device`` with at least ``len(replies)`` rows of the model's float size
        to write the rows into (a strategy keeps one across rounds: touching fresh memory for
        every round costs about as much as decoding); None allocates the matrix.
    server_round : int
        The round the replies answer (seeds the draws of defenses that draw at random).

    Returns
    -------
    tuple[RoundUpdates, list[ScreenedReply]]
        The usable replies' updates, and one screening record per reply (in ``replies`` order).
        A reply is checked in this order: error reply, one ArrayRecord and one MetricRecord, array
        names; per array (in the global model's order) shape, dtype, finite values; metric keys;
        a positive finite ``num-examples`` (:mod:`fl_poison.core.reply_checks`).
    """
    layout = UpdateLayout(dict(global_arrays))
    device = torch.device(device)
    if workspace is None:
        workspace = torch.empty((len(replies), layout.size), dtype=torch.float32, device=device)
    if workspace.shape[0] < len(replies) or workspace.shape[1] != layout.size or workspace.device != device:
        raise ValueError(
            f"workspace of shape {tuple(workspace.shape)} on {workspace.device} for {len(replies)} rows of {layout.size} on {device}"
        )
    matrix = workspace
    staging = matrix if device.type == "cpu" else torch.empty((1, layout.size), dtype=torch.float32)
    references = {slot.name: np.asarray(global_arrays[slot.name]).reshape(-1) for slot in layout.slots}
    screened: list[ScreenedReply] = []
    norms: list[float] = []
    kept: list[Message] = []
    buffer = np.empty(COORDINATE_BLOCK, dtype=np.float64)
    for message in replies:
        partition_id = partition_of(message)
        if message.has_error():
            screened.append(ScreenedReply(partition_id, "failed", message.error.reason or "", math.nan, {}))
            continue
        row = len(kept)
        target = staging[row if device.type == "cpu" else 0].numpy()
        problem, norm = _decode_reply(message, layout, references, target, buffer)
        metrics = _metric_values(message)
        if problem is None:
            problem = metrics_problem(metrics)
            norm = norm if problem is None else math.nan  # as for other malformed replies: no norm
        if problem is not None:
            screened.append(ScreenedReply(partition_id, "rejected", problem, norm, metrics))
            continue
        if device.type != "cpu":
            matrix[row].copy_(staging[0])
        kept.append(message)
        norms.append(norm)
        screened.append(ScreenedReply(partition_id, "ok", "", norm, metrics))
    metrics_of = [_metric_values(message) for message in kept]
    reported = tuple(_number(metrics, "num-examples") for metrics in metrics_of)
    updates = RoundUpdates(
        matrix=matrix[: len(kept)],
        scale=torch.ones(len(kept), dtype=torch.float64, device=device),
        norms=torch.tensor(norms, dtype=torch.float64, device=device),
        partition_ids=tuple(partition_of(message) for message in kept),
        num_examples=reported,
        reported_examples=reported,
        losses=tuple(_number(metrics, "train_loss") for metrics in metrics_of),
        contents=tuple(message.content for message in kept),
        arrays=tuple(next(iter(message.content.array_records.values())) for message in kept),
        layout=layout,
        server_round=server_round,
    )
    return updates, screened


def _decode_reply(
    message: Message,
    layout: UpdateLayout,
    references: Mapping[str, np.ndarray],
    target: np.ndarray,
    buffer: np.ndarray,
) -> tuple[str | None, float]:
    """Check one reply's envelope and arrays, writing its float update into ``target`` (``buffer``: float64 scratch).

    Returns the first problem (None when the arrays are usable) and the update norm. After a
    non-finite array the others are still read, so that the norm says how large (inf) or how
    broken (NaN) the update is; it is NaN when an array cannot be read with the global model's
    shape and dtype.
    """
    problem = envelope_problem(message)
    if problem is not None:
        return problem, math.nan
    record = next(iter(message.content.array_records.values()))
    if set(record.keys()) != set(layout.global_arrays):
        return "array names differ from the global model's", math.nan
    slot_of = {slot.name: slot for slot in layout.slots}
    squared = 0.0
    for name, reference in layout.global_arrays.items():
        try:
            values = npy_payload(record[name])
        except (TypeError, ValueError) as error:
            return problem or unreadable_problem(name, error), math.nan
        mismatch = array_problem(name, values, reference)
        if mismatch is not None:
            return problem or mismatch, math.nan
        slot = slot_of.get(name)
        if slot is None:  # not a float array: checked, not part of the update
            if problem is None and not np.all(np.isfinite(values)):
                problem = non_finite_problem(name)
            continue
        segment = target[slot.start : slot.stop]
        np.subtract(values.reshape(-1), references[name], out=segment)
        segment_squared = _squared_norm(segment, buffer)
        if problem is None and not math.isfinite(segment_squared):
            problem = non_finite_problem(name)
        squared += segment_squared
    return problem, math.sqrt(squared)


def _squared_norm(segment: np.ndarray, buffer: np.ndarray) -> float:
    """Sum of squares of a float32 vector, accumulated in float64, through ``buffer`` (float64) block by block.

    ``einsum`` rather than ``np.dot``: numpy's BLAS threads keep spinning after a call and starve
    the torch threads that aggregate next on a machine with few cores.
    """
    total = 0.0
    for start in range(0, segment.size, buffer.size):
        part = buffer[: min(buffer.size, segment.size - start)]
        np.copyto(part, segment[start : start + buffer.size])
        total += float(np.einsum("i,i->", part, part))
    return total
