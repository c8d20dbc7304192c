"""Cross-file batching: fixed batch sizes, order, and end-of-file markers that never run ahead."""

import numpy as np
import pytest

from embedder.batching import (
    FileDone,
    FileTask,
    WindowChunk,
    WindowSpec,
    batch_windows,
    iter_archive,
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
