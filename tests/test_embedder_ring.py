"""The decode workers' reusable shared-memory batch slots: waiting, stopping, page-locking."""

import numpy as np
import pytest
import torch

from embedder import ring


def test_shared_batch_tensor_is_shared_and_writable():
    t = ring.shared_tensor((3, 1000))
    assert t.is_shared() and t.shape == (3, 1000) and t.dtype == torch.float32
    t.numpy()[:] = np.arange(3000, dtype=np.float32).reshape(3, 1000)
    assert float(t.sum()) == sum(range(3000))


def test_ring_slot_wait_gives_up_when_the_main_process_is_gone(monkeypatch):
    r = ring.Ring(workers=1, depth=2, batch_size=3, window=5)
    monkeypatch.setattr(ring.os, "getppid", lambda: 100)
    r.start(0)  # the worker's parent is recorded as it starts, not at each wait
    a, b = r.take((3, 5)), r.take((2, 5))
    assert a.shape == (3, 5) and b.shape == (2, 5) and a.ctypes.data != b.ctypes.data
    with pytest.raises(ValueError, match="does not fit"):
        r.take((4, 5))
    monkeypatch.setattr(ring, "SLOT_WAIT_S", 0.01)
    monkeypatch.setattr(ring.os, "getppid", lambda: 1)  # re-parented: the parent has died
    with pytest.raises(SystemExit):
        r.take((3, 5))  # both slots are out and nobody will hand one back
    monkeypatch.setattr(ring.os, "getppid", lambda: 100)
    r.release(ring.SlotRef(0, 0, 3))
    c = r.take((3, 5))
    assert c.ctypes.data == a.ctypes.data  # the slot handed back longest ago
    r.close()  # wakes a waiting worker, which must then not write
    with pytest.raises(ring.Stopped):
        r.take((3, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_refused_page_lock_falls_back_and_leaves_cuda_usable(capsys):
    r = ring.Ring(workers=1, depth=2, batch_size=3, window=5)
    slot = ring.shared_tensor((3, 5))
    r._pin(slot)
    r._pin(slot)  # registered already: CUDA refuses
    assert r.pinned == [slot] and not r.pinning and slot.is_pinned()
    assert "not page-locked" in capsys.readouterr().err
    assert float(torch.ones(4, device="cuda").sum()) == 4.0  # the refusal does not resurface
    r.close()
    assert r.pinned == [] and not slot.is_pinned()
