"""The shared torch run loop: slicing into batches, device upload, and the reused pinned buffer."""

import numpy as np
import pytest
import torch

from embedder.batching import FileTask, WindowSpec, iter_batches
from embedder.runtime import PinnedStage, TorchEmbedder, check_run_options, resolve_device

N = 64  # samples per window of the toy model


class Toy(TorchEmbedder):
    """A deterministic toy model: per-window moments, so every row's output depends on its row only."""

    name = "toy"
    sample_rate = 64
    window_s = 1.0
    dim = 3

    def __init__(self, device: str, batch_size: int, precision: str | None = "fp32") -> None:
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.precision = check_run_options(self.device, batch_size, precision)

    @staticmethod
    def _moments(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(1), x.abs().amax(1), (x * x).mean(1)], dim=1)  # (B, 3)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self.run(self._moments, batch, (self.dim,))

    def frontend(self, batch: np.ndarray) -> np.ndarray:
        return self.run(lambda x: x, batch, (self.window_samples,))


def _windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, N)).astype(np.float32)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 100])
def test_slices_give_the_same_rows_as_one_pass(batch_size):
    x = _windows(7)
    want = Toy("cpu", 100).embed(x)
    got = Toy("cpu", batch_size).embed(x)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert Toy("cpu", batch_size).embed(x[:0]).shape == (0, 3)


def test_bad_options():
    with pytest.raises(ValueError, match="batch_size"):
        Toy("cpu", 0)
    with pytest.raises(ValueError, match="precision"):
        Toy("cpu", 4, precision="int4")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_gpu_pinned_stage_is_reused_and_never_mixes_batches():
    # 7 windows in slices of 3: the last slice is short, and each upload overwrites the same buffer
    m = Toy("cuda", 3)
    x = _windows(7, seed=1)
    np.testing.assert_allclose(m.frontend(x), x)
    np.testing.assert_allclose(m.embed(x), Toy("cpu", 7).embed(x), rtol=1e-5, atol=1e-6)
    assert m._stage.buffer.is_pinned() and m._stage.buffer.shape == (3, N)


@pytest.mark.gpu
@cuda
def test_pinned_stage_grows_for_a_larger_batch():
    stage = PinnedStage()
    a, b = _windows(2), _windows(5, seed=2)
    np.testing.assert_array_equal(stage.upload(a, torch.device("cuda")).cpu().numpy(), a)
    np.testing.assert_array_equal(stage.upload(b, torch.device("cuda")).cpu().numpy(), b)
    assert stage.buffer.shape == (5, N)


@pytest.mark.gpu
@cuda
def test_gpu_pinned_batches_from_workers_upload_without_staging(tmp_path, write_audio):
    sr = 8000

    class Toy8k(Toy):
        sample_rate = sr

    tasks = []
    for i in range(3):
        x = np.random.default_rng(i).standard_normal(sr * (3 + i)) * 0.1
        tasks.append(FileTask(i, str(write_audio(tmp_path / f"f{i}.wav", x, sr))))
    spec = WindowSpec(sample_rate=sr, window_s=1.0, hop_s=1.0)
    gpu, cpu = Toy8k("cuda", 4), Toy8k("cpu", 4)
    n = 0
    for b in iter_batches(tasks, spec, batch_size=4, workers=2, pin_memory=True):
        if not len(b):
            continue
        assert torch.from_numpy(b.audio).is_pinned()
        np.testing.assert_allclose(gpu.embed(b.audio), cpu.embed(b.audio), rtol=1e-5, atol=1e-6)
        n += len(b)
    assert n == 3 + 4 + 5
    assert getattr(gpu, "_stage", None) is None  # pinned input went straight to the device
