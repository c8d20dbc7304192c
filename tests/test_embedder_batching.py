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


def test_shared_batch_tensor_is_shared_and_writable():
    t = batching._shared_tensor((3, 1000))
    assert t.is_shared() and t.shape == (3, 1000) and t.dtype == torch.float32
    t.numpy()[:] = np.arange(3000, dtype=np.float32).reshape(3, 1000)
    assert float(t.sum()) == sum(range(3000))
