"""The ``chorus`` CLI on a tiny archive: embed, search, info, and its error exits."""

import json

import numpy as np
import pytest
import soundfile as sf

from explorer.cli import main

SR = 32000


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "archive"
    rng = np.random.default_rng(0)
    t = np.arange(SR * 20) / SR
    for site in ("A", "B"):
        for i in range(2):
            x = 0.02 * rng.standard_normal(t.size)
            # a whistle at 10-11 s in every file, a distinct buzz at 2-3 s in the A files
            x[10 * SR : 11 * SR] += 0.3 * np.sin(2 * np.pi * 3000 * t[:SR])
            if site == "A":
                x[2 * SR : 3 * SR] += 0.3 * np.sign(np.sin(2 * np.pi * 120 * t[:SR]))
            (root / site).mkdir(parents=True, exist_ok=True)
            sf.write(root / site / f"{site}_2024061{i}_050000.wav", x.astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def db(archive):
    path = archive.parent / "survey.chorus"
    assert main(["embed", str(archive), "--db", str(path), "--no-progress"]) == 0
    return path


def test_embed_prints_summary(archive, tmp_path, capsys):
    assert main(["embed", str(archive), "--db", str(tmp_path / "x.chorus"), "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("spectral: embedded 4 recordings") and "16 windows" in out[-1]


def test_search_finds_the_whistle_windows(db, archive, capsys):
    q = f"{archive / 'A' / 'A_20240610_050000.wav'}@10-11"
    assert main(["search", "--db", str(db), "--query", q, "-k", "4", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4
    assert all(h["start_s"] == 10.0 for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]


def test_search_where_and_per_recording(db, archive, capsys):
    q = f"{archive / 'A' / 'A_20240610_050000.wav'}@10-11"
    args = ["search", "--db", str(db), "--query", q, "-k", "10", "--format", "csv"]
    assert main(args + ["--where", "site = 'B'", "--per-recording", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("score,path")
    rows = lines[1:]
    assert len(rows) == 2 and all(",B/" in r for r in rows)


def test_info(db, capsys):
    assert main(["info", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "recordings  4" in out and "spectral: 16 windows" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["embed", "/no/such/dir", "--db", "{tmp}/d.chorus"], "archive folder not found"),
        (["embed", "{tmp}", "--db", "{tmp}/d.chorus"], "no audio files"),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--model", "nope"], "unknown model"),
        (
            ["embed", "{archive}", "--db", "{tmp}/d.chorus", "--model", "perch"],
            "no trained weights",
        ),
        (["search", "--db", "{tmp}/none.chorus", "--query", "x.wav"], "no Chorus database"),
        (["search", "--db", "{db}", "--query", "{tmp}/missing.wav"], "not found"),
        (["search", "--db", "{db}", "--query", "x.wav@5-2"], "END must be greater"),
        (
            [
                "search",
                "--db",
                "{db}",
                "--query",
                "{archive}/A/A_20240610_050000.wav",
                "--model",
                "perch",
            ],
            "no 'perch' embeddings",
        ),
        (["info", "--db", "{tmp}"], "no Chorus database"),
    ],
)
def test_errors_exit_2_with_one_line(argv, message, tmp_path, archive, db, capsys):
    argv = [a.format(tmp=tmp_path, archive=archive, db=db) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed"])
    assert exc.value.code == 2
