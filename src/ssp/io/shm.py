"""Shared-memory segments that DataLoader workers reuse for their batches.

A worker writes each batch into a shared-memory segment of its own pool and sends the main
process only the segment's identity; the segment itself (its file descriptor) crosses once, with
the first batch written into it, and the main process keeps it mapped. A fresh segment per batch
cost more than reading the batch from the shards: creating and mapping it, faulting in its pages
on both sides (about 1 ms per MB on a 2-core VM), and handing its descriptor over a socket.

A segment starts with a state word: 1 while it holds a batch the main process has not let go of,
0 once it is free. The main process frees it when the last array of the batch is garbage (a
finalizer on the array they all view), so a batch may be held as long as the caller likes: the
worker never writes into a segment still in use, it takes another or makes a new one. Segments
too small for a batch are dropped, and the main process forgets them with the worker's next batch;
segments of workers that have exited are forgotten when a new worker's first batch arrives.
"""
from __future__ import annotations

import os
import secrets
import weakref

import numpy as np
import torch

HEADER = 64          # bytes before a segment's data; the first 8 are its state word
MIN_CAPACITY = 1 << 16


class Segment:
    """One buffer of a worker's pool: the state word, then room for ``capacity`` bytes."""

    def __init__(self, ident: int, capacity: int):
        self.id, self.capacity, self.sent = ident, capacity, False
        self.tensor = torch.empty(HEADER + capacity, dtype=torch.uint8).share_memory_()
        self.array = self.tensor.numpy()
        self.state = self.array[:8].view(np.int64)    # [1]: 0 free, 1 lent to the main process


class Pool:
    """The segments of one process (made again after a fork: a worker never shares its parent's)."""

    def __init__(self):
        self.pid, self.token = os.getpid(), secrets.token_hex(8)
        self.segments: list[Segment] = []
        self.retired: list[int] = []     # ids the main process is to forget, sent with the next batch
        self.made = 0

    def acquire(self, nbytes: int) -> Segment:
        """A free segment of at least ``nbytes``, marked in use (a new one if none fits)."""
        free = [s for s in self.segments if s.state[0] == 0]
        fits = [s for s in free if s.capacity >= nbytes]
        if fits:
            seg = min(fits, key=lambda s: s.capacity)
        else:
            for s in free:               # too small for this batch: replaced rather than kept
                self.segments.remove(s)
                self.retired.append(s.id)
            seg = Segment(self.made, max(MIN_CAPACITY, 1 << (max(nbytes, 1) - 1).bit_length()))
            self.made += 1
            self.segments.append(seg)
        seg.state[0] = 1
        return seg


_POOL: Pool | None = None


def pool() -> Pool:
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid():
        _POOL = Pool()
    return _POOL


class Handle:
    """A batch's bytes in a segment. Pickled (worker -> main process) as the segment's identity,
    with the segment itself the first time; unpickled as the bytes (``lease``)."""

    def __init__(self, owner: Pool, seg: Segment, nbytes: int):
        self.token, self.pid, self.seg, self.nbytes = owner.token, owner.pid, seg, nbytes
        self.retired, owner.retired = owner.retired, []
        self.passed = False              # leased or sent: the segment is then freed by the reader

    def data(self) -> np.ndarray:
        """Where to write the batch (in the process that made the handle)."""
        return self.seg.array[HEADER:HEADER + self.nbytes]

    def lease(self) -> np.ndarray:
        """The bytes, read in the process that made the handle (no worker in between)."""
        self.passed = True
        return lease(self.seg.array, self.seg.state, self.nbytes)

    def __del__(self):
        if not self.passed:              # a batch dropped unread: its segment is free again
            self.seg.state[0] = 0

    def __reduce__(self):
        self.passed = True
        seg = self.seg
        first = None if seg.sent else seg.tensor
        seg.sent = True
        return receive, (self.token, self.pid, seg.id, first, self.retired, self.nbytes)


# --------------------------------------------------------------------------- the main process

_ATTACHED: dict[str, tuple[int, dict[int, tuple[np.ndarray, np.ndarray]]]] = {}   # token -> (pid, id -> segment)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def receive(token: str, pid: int, seg_id: int, tensor: torch.Tensor | None, retired: list[int],
            nbytes: int) -> np.ndarray:
    """A worker's batch, arriving: its bytes, in the segment it names (kept mapped for the next)."""
    entry = _ATTACHED.get(token)
    if entry is None:
        for old in [t for t, (p, _) in _ATTACHED.items() if not _alive(p)]:
            del _ATTACHED[old]           # batches still held keep their own segment mapped
        entry = _ATTACHED[token] = (pid, {})
    segments = entry[1]
    for r in retired:
        segments.pop(r, None)
    if tensor is not None:
        array = tensor.numpy()
        segments[seg_id] = (array, array[:8].view(np.int64))
    if seg_id not in segments:
        raise RuntimeError(f"a DataLoader worker (pid {pid}) sent a batch in shared-memory segment {seg_id}, "
                           "which never reached this process")
    array, state = segments[seg_id]
    return lease(array, state, nbytes)


def lease(array: np.ndarray, state: np.ndarray, nbytes: int) -> np.ndarray:
    """The batch's bytes; the segment is free again once no array views them."""
    data = np.frombuffer(memoryview(array), np.uint8, count=nbytes, offset=HEADER)
    weakref.finalize(data, _release, state)   # views of `data` keep `data` (its base is no array)
    return data


def _release(state: np.ndarray) -> None:
    state[0] = 0
