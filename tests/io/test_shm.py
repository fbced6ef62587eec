"""Worker batches in reused shared-memory segments (ssp.io.shm through ssp.engine.data.collate_shared)."""
import gc

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ssp.engine.data import collate, collate_shared, loader_collate, unpack_shared
from ssp.io import shm


class _Videos(Dataset):
    def __init__(self, n=5, frames=3, size=(6, 5)):
        self.n, self.frames, self.size = n, frames, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng, t = np.random.default_rng(i), self.frames + i % 2
        return {"video_id": f"v{i}", "frames": rng.integers(0, 255, (t, *self.size, 3), dtype=np.uint8),
                "labels": rng.integers(0, 3, (t, *self.size), dtype=np.uint8),
                "has_mask": rng.random(t) > 0.5,
                "vggish": rng.standard_normal((t, 7)).astype(np.float32)}


def _equal(got, want):
    assert set(got) == set(want) and "_shared" not in got
    assert got["video_ids"] == want["video_ids"]
    for key in ("video_index", "frames", "labels", "has_mask", "vggish"):
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key


def _loader(ds, sampler, workers=2):
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate_shared,
                      multiprocessing_context="fork")


def test_shared_memory_batches_equal_plain_ones():
    """Worker batches unpack to exactly what `collate` gives (odd sizes, mixed dtypes: every view
    aligned), through a real DataLoader with two workers."""
    ds = _Videos()
    assert loader_collate(0) is collate and loader_collate(2) is collate_shared
    sampler = [[0, 1], [2], [3, 4]]
    for batch, idx in zip(_loader(ds, sampler), sampler):
        assert isinstance(batch["_shared"], np.ndarray)
        _equal(unpack_shared(batch), collate([ds[i] for i in idx]))
    plain = collate([ds[0]])
    assert unpack_shared(plain) is plain


def test_segments_are_reused_once_let_go():
    """60 batches from two workers fit in a few segments, each handed over once."""
    shm._ATTACHED.clear()
    ds = _Videos(n=60)
    sampler = [[i] for i in range(60)]
    for batch, idx in zip(_loader(ds, sampler), sampler):
        _equal(unpack_shared(batch), collate([ds[i] for i in idx]))
        del batch
    per_worker = [len(segs) for _, segs in shm._ATTACHED.values()]
    assert len(per_worker) == 2 and all(1 <= n <= 5 for n in per_worker), per_worker


def test_held_batches_are_never_overwritten():
    """Batches kept (unpacked or not) stay intact while the workers go on: a segment still viewed
    is not written again, however long the caller holds it."""
    ds = _Videos(n=40)
    sampler = [[i, (i + 1) % 40] for i in range(40)]
    held = list(_loader(ds, sampler))
    unpacked = [unpack_shared(b) for b in held[::2]]
    for got, idx in zip(unpacked, sampler[::2]):
        _equal(got, collate([ds[i] for i in idx]))
    for b, idx in zip(held[1::2], sampler[1::2]):
        _equal(unpack_shared(b), collate([ds[i] for i in idx]))


def test_growing_batches_stay_intact_while_segments_are_replaced():
    ds = _Videos(n=12, size=(48, 48))                          # 27 to 36 KB a video
    sampler = [list(range(k)) for k in range(1, 13)]          # each batch larger than the last
    for batch, idx in zip(_loader(ds, sampler, workers=1), sampler):
        _equal(unpack_shared(batch), collate([ds[i] for i in idx]))


def test_a_segment_too_small_is_retired_and_forgotten_by_the_main_process():
    """The hand-over itself, step by step (what pickling runs on either side, without a worker)."""
    owner = shm.Pool()

    def send(nbytes):
        fn, args = shm.Handle(owner, owner.acquire(nbytes), nbytes).__reduce__()
        return fn(*args)

    small = send(1000)
    assert set(shm._ATTACHED[owner.token][1]) == {0}
    big = send(4 * shm.MIN_CAPACITY)                           # segment 0 is still in use: a new one
    del small
    bigger = send(8 * shm.MIN_CAPACITY)                        # 0 is free but too small: replaced
    assert set(shm._ATTACHED[owner.token][1]) == {1, 2} and owner.retired == []
    del big, bigger
    last = send(1000)                                          # the smallest free one that fits
    assert owner.made == 3 and [s.id for s in owner.segments if s.state[0] == 1] == [1]
    del last
    assert all(s.state[0] == 0 for s in owner.segments)


def test_exited_workers_segments_are_forgotten():
    """A new DataLoader per epoch (as the trainer makes): the last epoch's workers have exited, and
    their segments are let go when the new workers' first batches arrive."""
    shm._ATTACHED.clear()
    ds = _Videos(n=6)
    sampler = [[i] for i in range(6)]
    kept = None
    for epoch in range(3):
        for batch in _loader(ds, sampler):
            kept = kept or unpack_shared(batch)                 # a batch held across epochs stays valid
        gc.collect()
    assert len(shm._ATTACHED) == 2                             # the last epoch's two workers
    _equal(kept, collate([ds[0]]))


def test_a_batch_dropped_unread_frees_its_segment():
    owner = shm.pool()
    before = len(owner.segments)
    for i in range(5):
        collate_shared([_Videos()[i]])                          # made in this process, never read
    assert len(owner.segments) <= before + 1
    batch = unpack_shared(collate_shared([_Videos()[0]]))       # read: busy while its arrays live
    seg = next(s for s in owner.segments if s.state[0] == 1)
    del batch
    gc.collect()
    assert seg.state[0] == 0
