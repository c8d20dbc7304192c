"""``chorus demo``: the synthetic archive is what it claims, and the loop finds the planted calls."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from explorer import demo
from explorer.cli import main


def test_call_synthesis_is_in_band():
    rng = np.random.default_rng(0)
    for name, band in {"sweep": (2800, 7500), "hoot": (400, 2700), "trill": (4000, 4400)}.items():
        x = demo.CALLS[name](rng)
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.size, 1 / demo.SAMPLE_RATE)
        inside = spec[(f >= band[0]) & (f <= band[1])].sum() / spec.sum()
        assert inside > 0.9, (name, inside)


def test_relevance_rule():
    truth = pd.DataFrame(
        [("a.wav", "s", "sweep", 12.0, 12.4, 3.0)],
        columns=["file", "site", "call_type", "start_s", "end_s", "snr_db"],
    )
    assert demo.relevant(truth, "sweep", "a.wav", 10.0, 15.0)
    assert demo.relevant(truth, "sweep", "a.wav", 12.2, 17.2)  # half the call
    assert not demo.relevant(truth, "sweep", "a.wav", 12.3, 17.3)
    assert not demo.relevant(truth, "hoot", "a.wav", 10.0, 15.0)
    assert not demo.relevant(truth, "sweep", "b.wav", 10.0, 15.0)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    truth = pd.read_csv(tmp_path / "truth.csv")
    files = sorted((tmp_path / "audio").rglob("*.wav"))
    assert len(files) == 12 and len(truth) == 12 * demo.CALLS_PER_RECORDING
    info = sf.info(files[0])
    assert (info.samplerate, info.duration) == (32000, 120.0)
    assert truth.snr_db.between(-5, 15).all() and set(truth.call_type) == set(demo.CALL_TYPES)
    # calls never cross a 5 s slot boundary, so each window holds at most one call type
    assert (np.floor(truth.start_s / 5) == np.floor(truth.end_s / 5)).all()
    for call_type in demo.CALL_TYPES:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(call_type))
        assert float(line.split()[-1]) >= 0.8, line
    assert "windows with spectral" in out and "mean precision@10" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nosuch"], "unknown model 'nosuch'"),
        (["--model", "animal2vec-small"], "animal2vec-small has no installed weights"),
        (["{tmp}/afile"], "is a file"),
    ],
)
def test_demo_refuses_bad_requests_before_synthesis(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(demo, "make_demo_archive", lambda *a, **k: pytest.fail("synthesised"))
    assert main(["demo", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_demo_uses_installed_weights(tmp_path, monkeypatch, capsys):
    import embedder
    from embedder.weights import save_checkpoint

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    m = embedder.load_model("animal2vec-small", weights=None, device="cpu")
    save_checkpoint(tmp_path / "w.pt", m.config.to_dict(), m.model.state_dict())
    assert main(["models", "import", "animal2vec-small", str(tmp_path / "w.pt")]) == 0
    seen = {}

    def fake_run(out, model, seed, progress, weights):
        seen.update(model=model, weights=weights)
        return demo.DemoResult({"tonal": 1.0}, 3, {"embed": 0.1, "total": 0.2})

    monkeypatch.setattr(demo, "run_demo", fake_run)
    assert main(["demo", str(tmp_path / "d"), "--model", "animal2vec-small"]) == 0
    assert seen["model"] == "animal2vec-small" and str(tmp_path / "home") in seen["weights"]
