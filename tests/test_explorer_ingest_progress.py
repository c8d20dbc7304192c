"""The progress bar of a finished run ends at its total, even when the estimate was too high."""

from __future__ import annotations

import re

import numpy as np
import soundfile as sf

from explorer import ingest

SR = 16_000


def test_the_bar_ends_at_its_total_when_files_give_fewer_windows_than_estimated(
    tmp_path, monkeypatch, capsys
):
    for i in range(2):
        x = 0.1 * np.random.default_rng(i).standard_normal(int(12 * SR))
        sf.write(tmp_path / f"f{i}.wav", x.astype(np.float32), SR)
    real = ingest.expected_windows
    monkeypatch.setattr(ingest, "expected_windows", lambda d, spec: real(d, spec) + 2)
    ingest.embed_archive(tmp_path, tmp_path / "db.chorus", progress=True)
    counts = re.findall(r"(\d+)/(\d+) \[", capsys.readouterr().err)
    assert counts and counts[-1] == ("6", "6")  # 3 windows per file, 10 estimated
