"""One model at two hops in one database: stored side by side, searched, resumed, never mixed."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import index
from explorer.ingest import IngestError, embed_archive, embed_span

SR = 32_000


def _archive(root, n_files=2, seconds=12.0):
    rng = np.random.default_rng(0)
    for i in range(n_files):
        t = np.arange(int(seconds * SR)) / SR
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (500 + 300 * i) * t)
        sf.write(root / f"A_2024061{i}_050000.wav", x.astype(np.float32), SR)
    return root


def test_a_second_hop_goes_beside_the_first_and_reruns_resume_it(tmp_path):
    archive = _archive(tmp_path)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, progress=False)  # hop 5 (the window)
    s = embed_archive(archive, db_path, hop_s=2.5, progress=False)
    assert s.model == "spectral-hop2.5" and s.n_embedded == 2
    db = index.connect(db_path)
    assert set(db.models()) == {"spectral", "spectral-hop2.5"}
    n5, n25 = db.windows("spectral").count_rows(), db.windows("spectral-hop2.5").count_rows()
    assert (n5, n25) == (2 * 3, 2 * 4)  # 12 s: starts 0, 5, (10 tail) vs 0, 2.5, 5, 7.5
    assert db.meta["models"]["spectral-hop2.5"]["hop_s"] == 2.5
    again = embed_archive(archive, db_path, hop_s=2.5, progress=False)
    assert (again.model, again.n_embedded, again.n_skipped) == ("spectral-hop2.5", 0, 2)
    assert index.connect(db_path).windows("spectral-hop2.5").count_rows() == n25
    # a query is embedded by the base model at the variant's hop, and finds its own file first
    q = embed_span(db, "spectral-hop2.5", archive / "A_20240611_050000.wav", 0.0, 12.0)
    hits = db.search("spectral-hop2.5", q).limit(3).to_pandas()
    rec = db.recordings().set_index("recording_id").loc[hits["recording_id"], "path"]
    assert list(rec) == ["A_20240611_050000.wav"] * 3


def test_other_settings_still_refused_with_one_line(tmp_path):
    archive = _archive(tmp_path, n_files=1)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, progress=False)
    with pytest.raises(IngestError, match="channels"):
        embed_archive(archive, db_path, hop_s=2.5, channels="all", progress=False)
    assert index.connect(db_path).models() == ["spectral"]
