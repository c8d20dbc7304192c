"""``chorus embed --store float16``: vectors stored as float16, fixed by the first embed."""

import numpy as np
import pyarrow as pa
import soundfile as sf

import index
from explorer.cli import main

SR = 32000


def test_embed_store_float16_then_search_and_a_conflicting_store(tmp_path, capsys):
    root = tmp_path / "archive"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(root / f"r{i}.wav", 0.05 * rng.standard_normal(SR * 10).astype(np.float32), SR)
    db_path = tmp_path / "s.chorus"
    argv = ["embed", str(root), "--db", str(db_path), "--no-progress"]
    assert main([*argv, "--store", "float16"]) == 0
    db = index.connect(db_path)
    assert db.windows("spectral").schema.field("vector").type.value_type == pa.float16()
    assert main(["search", "--db", str(db_path), "--query", f"{root / 'r0.wav'}@0-5"]) == 0
    capsys.readouterr()
    sf.write(root / "r2.wav", 0.05 * rng.standard_normal(SR * 10).astype(np.float32), SR)
    assert main(argv) == 0  # no --store: appends as stored
    assert index.connect(db_path).windows("spectral").count_rows() == 6
    assert main([*argv, "--store", "float32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stores float16 vectors; float32 applies only" in err[0]
