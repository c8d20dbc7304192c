"""Cross-file batching: fixed batch sizes, order, and end-of-file markers that never run ahead."""

import numpy as np
import pytest
import torch

from embedder import batching
from embedder.batching import (
    FileDone,
    FileTask,
    WindowChunk,
    WindowSpec,
    batch_windows,
    iter_archive,
    iter_batches,
)


def _chunk(key, n, first=0, win=4):
    starts = np.arange(first, first + n, dtype=np.float64)
    audio = np.tile(starts[:, None] + 1000 * key, (1, win)).astype(np.float32)  # (n, win)
    return WindowChunk(key, -1, starts, starts + 1, audio)


def _stream():
    # file 1: 5 windows in two chunks; file 2: 2 windows; file 3: fails after 3 windows; file 4: empty
    return [
        _chunk(1, 3),
        _chunk(2, 2),
        _chunk(1, 2, first=3),
        FileDone(2, 2),
        FileDone(1, 5),
        _chunk(3, 3),
        FileDone(3, 3, "broken"),
        FileDone(4, 0, "too short"),
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 7, 100])
def test_batches_are_full_and_keep_every_window_in_order(batch_size):
    batches = list(batch_windows(_stream(), batch_size))
    sizes = [len(b) for b in batches if len(b)]
    assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
    keys = np.concatenate([b.keys for b in batches])
    starts = np.concatenate([b.start_s for b in batches])
    assert keys.tolist() == [1, 1, 1, 2, 2, 1, 1, 3, 3, 3]
    assert starts.tolist() == [0, 1, 2, 0, 1, 3, 4, 0, 1, 2]
    audio = np.concatenate([b.audio for b in batches if len(b)])
    np.testing.assert_array_equal(audio[:, 0], starts + 1000 * keys)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 7, 100])
def test_file_done_travels_with_its_last_window_never_before(batch_size):
    seen_windows = {}
    reported = []
    for b in batch_windows(_stream(), batch_size):
        for k in b.keys:
            seen_windows[int(k)] = seen_windows.get(int(k), 0) + 1
        for d in b.done:
            # every window of the file has been delivered by the time its marker is
            assert seen_windows.get(d.key, 0) == d.n_windows
            reported.append(d.key)
    assert sorted(reported) == [1, 2, 3, 4]


def test_done_marker_is_not_held_back_until_the_end():
    # a long stream: file 1 ends early; its marker must arrive long before the stream ends
    stream = [_chunk(1, 3), FileDone(1, 3)] + [_chunk(2, 1, first=i) for i in range(50)]
    for i, b in enumerate(batch_windows(stream, 4)):
        if any(d.key == 1 for d in b.done):
            assert i <= 1
            break
    else:
        pytest.fail("marker for file 1 never delivered")


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        list(batch_windows([], 0))


def test_iter_archive_workers_match_in_process(tmp_path, write_audio):
    sr = 8000
    paths = []
    for i in range(4):
        t = np.arange(int(sr * (3 + i))) / sr
        paths.append(
            write_audio(tmp_path / f"f{i}.wav", 0.1 * np.sin(2 * np.pi * 440 * (i + 1) * t), sr)
        )
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    tasks = [FileTask(i, str(p)) for i, p in enumerate(paths)] + [
        FileTask(9, str(tmp_path / "bad.wav"))
    ]
    spec = WindowSpec(sample_rate=sr, window_s=1.0, hop_s=0.5)

    def collect(workers):
        out, done = {}, {}
        for item in iter_archive(tasks, spec, workers=workers):
            if isinstance(item, FileDone):
                done[item.key] = (item.n_windows, item.error is not None)
            else:
                out.setdefault(item.key, []).append(item.audio)
        return {k: np.concatenate(v) for k, v in out.items()}, done

    a, done_a = collect(0)
    b, done_b = collect(2)
    assert done_a == done_b
    assert done_a[9] == (0, True)
    assert set(a) == set(b) == {0, 1, 2, 3}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert len(a[k]) == done_a[k][0]


@pytest.mark.parametrize("workers, shm_free", [(0, None), (2, None), (2, 0.0)])
def test_iter_batches_packs_every_window_once_with_markers_after_them(
    tmp_path, write_audio, workers, shm_free, monkeypatch, capsys
):
    if shm_free is not None:  # e.g. Docker's 64 MB /dev/shm: windows go through pipes instead
        monkeypatch.setattr(batching, "shared_memory_free", lambda path=None: shm_free)
    sr = 8000
    tasks = []
    for i in range(5):
        t = np.arange(int(sr * (2 + i))) / sr
        path = write_audio(tmp_path / f"f{i}.wav", 0.1 * np.sin(2 * np.pi * 300 * (i + 1) * t), sr)
        tasks.append(FileTask(i, str(path)))
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    tasks.append(FileTask(9, str(tmp_path / "bad.wav")))
    spec = WindowSpec(sample_rate=sr, window_s=1.0, hop_s=0.5)
    want = {}  # key -> (start_s, audio) from the in-process chunk stream
    for item in iter_archive(tasks, spec):
        if not isinstance(item, FileDone):
            want.setdefault(item.key, []).append((item.start_s, item.audio))

    got, seen, done, sizes = {}, {}, {}, []
    for b in iter_batches(tasks, spec, batch_size=4, workers=workers):
        assert isinstance(b.audio, np.ndarray) and b.audio.dtype == np.float32
        if len(b):
            sizes.append(len(b))
        for k, s, a in zip(b.keys, b.start_s, b.audio, strict=True):
            got.setdefault(int(k), []).append((s, a))
            seen[int(k)] = seen.get(int(k), 0) + 1
        for d in b.done:
            assert d.key not in done
            assert seen.get(d.key, 0) == d.n_windows  # never ahead of its windows
            done[d.key] = d
    assert set(done) == {0, 1, 2, 3, 4, 9} and done[9].error and done[9].n_windows == 0
    assert sizes.count(4) >= len(sizes) - max(workers, 1)  # at most one short batch per worker
    assert ("through pipes" in capsys.readouterr().err) == (shm_free is not None)
    for k, chunks in want.items():
        starts = np.concatenate([c[0] for c in chunks])
        audio = np.concatenate([c[1] for c in chunks])
        assert [s for s, _ in got[k]] == starts.tolist()  # in order within a file
        np.testing.assert_array_equal(np.stack([a for _, a in got[k]]), audio)


def test_iter_batches_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches([], WindowSpec(8000, 1.0, 1.0), 0))


def test_shared_memory_free(tmp_path):
    assert 0 < batching.shared_memory_free(str(tmp_path)) < float("inf")
    missing = str(tmp_path / "missing")  # no such folder: nothing to check, no limit
    assert batching.shared_memory_free(missing) == float("inf")


def _archive(tmp_path, write_audio, n_files=7, sr=8000):
    """Files of unequal length (so the workers' shares differ), plus one that is not audio."""
    rng = np.random.default_rng(1)
    tasks = []
    for i in range(n_files):
        x = 0.1 * rng.standard_normal(sr * (1 + 3 * (i % 3)) + 123 * i)
        tasks.append(FileTask(i, str(write_audio(tmp_path / f"f{i}.flac", x, sr))))
    (tmp_path / "bad.flac").write_bytes(b"fLaC but not really")
    tasks.insert(3, FileTask(99, str(tmp_path / "bad.flac")))
    return tasks, WindowSpec(sample_rate=sr, window_s=1.0, hop_s=1.0)


def _copies(batches, hold_s=0.0):
    """Each batch as plain data, copied; ``hold_s``: keep each batch that long before copying it, so
    the workers run ahead while the consumer holds it."""
    import time

    out = []
    for b in batches:
        time.sleep(hold_s)
        out.append((b.keys.tolist(), b.start_s.tolist(), b.audio.copy(), [d for d in b.done]))
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_reused_memory_gives_the_same_batches(tmp_path, write_audio, batch_size):
    tasks, spec = _archive(tmp_path, write_audio)
    fresh = _copies(iter_batches(tasks, spec, batch_size, workers=3))
    reused = _copies(iter_batches(tasks, spec, batch_size, workers=3, reuse_memory=True))
    assert [b[0] for b in reused] == [b[0] for b in fresh]
    assert [b[1] for b in reused] == [b[1] for b in fresh]
    assert [b[3] for b in reused] == [b[3] for b in fresh]
    for (_, _, a, _), (_, _, b, _) in zip(fresh, reused, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    errors = {d.key for b in reused for d in b[3] if d.error}
    assert errors == {99}


def test_reused_memory_is_a_fixed_ring_that_never_overwrites_the_held_batch(tmp_path, write_audio):
    tasks, spec = _archive(tmp_path, write_audio)
    want = _copies(iter_batches(tasks, spec, 1, workers=2))
    addresses, got = set(), []
    for b in iter_batches(tasks, spec, 1, workers=2, reuse_memory=True):
        if len(b):
            addresses.add(b.audio.ctypes.data)
        held = b.audio.copy()
        got.extend(_copies([b], hold_s=0.05))  # the workers fill every other slot meanwhile
        np.testing.assert_array_equal(b.audio, held)
    assert len(got) == len(want) > 3 * 2 * (batching.PREFETCH_CHUNKS + 1)  # each slot refilled
    for (_, _, a, _), (_, _, b, _) in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(addresses) <= 2 * (batching.PREFETCH_CHUNKS + 1)  # per worker: its slots, reused


def _uneven(tmp_path, write_audio, sr=8000):
    """One long file and two short ones: once the short files' workers are done, the long file's
    worker is given more prefetch than it has slots, so it waits for the consumer's slot."""
    rng = np.random.default_rng(3)
    tasks = []
    for i, seconds in enumerate([60, 1.5, 1.5]):
        x = 0.1 * rng.standard_normal(int(sr * seconds))
        tasks.append(FileTask(i, str(write_audio(tmp_path / f"u{i}.flac", x, sr))))
    return tasks, WindowSpec(sample_rate=sr, window_s=1.0, hop_s=1.0)


@pytest.mark.parametrize("how", ["break", "close", "exception"])
def test_leaving_a_reused_ring_early_keeps_the_held_batch_and_stops_the_workers(
    tmp_path, write_audio, how
):
    import gc
    import multiprocessing
    import time

    tasks, spec = _uneven(tmp_path, write_audio)
    want = _copies(iter_batches(tasks, spec, 1, workers=3))
    it = iter_batches(tasks, spec, 1, workers=3, reuse_memory=True)
    try:
        for i, b in enumerate(it):
            if i == 10:
                held = b
                time.sleep(0.3)  # the long file's worker fills its other slots and waits
                if how == "break":
                    break
                if how == "close":
                    it.close()
                    break
                raise RuntimeError("the model failed on this batch")
    except RuntimeError:
        pass
    del it
    gc.collect()
    time.sleep(0.3)  # a worker woken to write would have done so by now
    np.testing.assert_array_equal(held.audio, want[10][2])
    assert held.keys.tolist() == want[10][0]
    assert multiprocessing.active_children() == []


def test_reused_memory_without_cuda_falls_back_to_copying(tmp_path, write_audio, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the slots are page-locked (see the CUDA test)")
    tasks, spec = _archive(tmp_path, write_audio, n_files=3)
    want = _copies(iter_batches(tasks, spec, 4, workers=2))
    got = _copies(iter_batches(tasks, spec, 4, workers=2, pin_memory=True, reuse_memory=True))
    for (_, _, a, _), (_, _, b, _) in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert capsys.readouterr().err.count("not page-locked") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_reused_slots_are_page_locked_in_place_and_unlocked_after(tmp_path, write_audio):
    tasks, spec = _archive(tmp_path, write_audio)
    want = _copies(iter_batches(tasks, spec, 4, workers=2))
    kept = []
    got = []
    for b in iter_batches(tasks, spec, 4, workers=2, pin_memory=True, reuse_memory=True):
        src = torch.from_numpy(b.audio)
        if len(b):
            assert src.is_pinned()
            kept.append(src)
        on_gpu = src.to("cuda", non_blocking=True)
        got.append(on_gpu.cpu().numpy())
    for (_, _, a, _), b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(t.is_pinned() for t in kept)


SPAWNED = """
import multiprocessing, sys
import numpy as np
from embedder.batching import FileTask, WindowSpec, iter_archive, iter_batches

if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    tasks = [FileTask(i, p) for i, p in enumerate(sys.argv[2:])]
    spec = WindowSpec(8000, 1.0, 1.0)
    def windows(items):  # every window as (file, start, checksum), in a fixed order
        rows = []
        for b in items:
            if hasattr(b, "audio"):
                keys = [b.key] * len(b.start_s) if hasattr(b, "key") else b.keys  # chunk or batch
                for k, s, a in zip(keys, b.start_s, b.audio):
                    rows.append((int(k), float(s), float(np.float64(a).sum())))
        return sorted(rows)
    print(windows(iter_batches(tasks, spec, 3)))
    print(windows(iter_batches(tasks, spec, 3, workers=2)))
    print(windows(iter_batches(tasks, spec, 3, workers=2, reuse_memory=True)))
    print(windows(iter_archive(tasks, spec, 2)))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_that_are_spawned_not_forked(tmp_path, write_audio, method):
    # macOS and Windows spawn workers, Linux forkserves them from Python 3.14 on
    import subprocess
    import sys

    tasks, _ = _archive(tmp_path, write_audio, n_files=4)
    script = tmp_path / "spawned.py"
    script.write_text(SPAWNED)
    args = [sys.executable, "-W", "ignore", str(script), method] + [t.path for t in tasks]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4 and len(set(lines)) == 1 and lines[0].count("(") > 8
