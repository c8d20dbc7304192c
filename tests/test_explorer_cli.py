"""The ``chorus`` CLI on a tiny archive: embed, search, info, and its error exits."""

import json

import numpy as np
import pytest
import soundfile as sf

from embedder.runtime import cpu_bf16_problem
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
    assert main(["search", "--db", str(db), "--query", q, "-k", "3", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3
    assert all(h["start_s"] == 10.0 for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]
    # the query's own window (score ~1) is left out unless asked for
    assert "A/A_20240610_050000.wav" not in [h["path"] for h in hits]
    argv = ["search", "--db", str(db), "--query", q, "-k", "4", "--format", "json"]
    assert main(argv + ["--include-query"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == "A/A_20240610_050000.wav" and hits[0]["score"] > 0.95


def test_a_cold_search_of_a_settled_database_loads_neither_lance_nor_pandas(
    db, tmp_path, capsys, settle
):
    import os
    import shutil
    import subprocess
    import sys

    settled = tmp_path / "settled.chorus"
    shutil.copytree(db, settled)
    settle(settled)
    argv = ["search", "--db", str(settled), "--query", "A/A_20240610_050000.wav@10-11", "-k", "3"]
    for fmt in ("json", "csv", "table"):
        assert main([*argv, "--format", fmt]) == 0  # the first one keeps the columns
        want = capsys.readouterr().out
        code = (
            "import sys; from explorer.cli import main; code = main(sys.argv[1:]); "
            "print(sorted(m for m in ('lance', 'lancedb', 'pandas') if m in sys.modules), "
            "file=sys.stderr); sys.exit(code)"
        )
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        got = subprocess.run(
            [sys.executable, "-c", code, *argv, "--format", fmt],
            capture_output=True,
            text=True,
            env=env,
        )
        assert got.returncode == 0 and got.stdout == want, got.stderr
        assert got.stderr.strip().splitlines()[-1] == "[]"
    assert want.splitlines()[0].split() == [
        "score",
        "path",
        "start_s",
        "end_s",
        "site",
        "window_id",
    ]
    assert len(want.splitlines()) == 4 and " 10.000 " in want.splitlines()[1]


def test_search_takes_the_archive_relative_paths_it_prints(db, capsys):
    q = "A/A_20240610_050000.wav@10-11"  # as `chorus search` and `chorus label --list` print
    assert main(["search", "--db", str(db), "--query", q, "-k", "3", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["start_s"] for h in hits] == [10.0] * 3


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
        (["search", "--db", "{db}", "--query", "x.wav", "--per-recording", "0"], "--per-recording"),
        (["train", "--db", "{db}", "--label", "x", "--C", "nan"], "C must be a positive number"),
        (["cluster", "--db", "{db}", "--k", "2", "--out", "{tmp}"], "is a folder"),
        (
            ["export", "--db", "{db}", "--labels", "--format", "csv", "--out", "{tmp}"],
            "is a folder",
        ),
        (
            ["export", "--db", "{db}", "--labels", "--format", "csv", "--out", "/proc/no/x.csv"],
            "/proc/no",
        ),
        (["train", "--db", "{db}", "--label", "x", "--precision", "2"], "precision must be in"),
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
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--index", "bogus"], "bad FAISS factory"),
        (
            ["embed", "{archive}", "--db", "{tmp}/d.chorus", "--precision", "bf16"],
            "apply to neural models",
        ),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--batch-size", "0"], "--batch-size"),
        (
            ["embed", "{archive}", "--db", "{tmp}/d.chorus", "--backend", "onnxruntime"],
            "applies to perch, not spectral",
        ),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--hop", "nan"], "--hop must be"),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--hop", "0"], "--hop must be"),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--hop", "1e-9"], "at least one sample"),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--site", "dir:x"], "bad site rule"),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--site", "(a"], "bad site regex"),
        (["embed", "{archive}", "--db", "{tmp}/d.chorus", "--site", "S(.)"], "named group"),
        (["embed", "{archive}", "--db", "{archive}/A/A_20240610_050000.wav"], "is a file"),
        (
            ["embed", "{archive}", "--db", "{tmp}/d.chorus", "--model", "animal2vec-small"]
            + ["--weights", "{tmp}/missing.pt"],
            "missing.pt",
        ),
        (
            ["embed", "{archive}", "--db", "{tmp}/d.chorus", "--model", "animal2vec-small"]
            + ["--allow-untrained", "--device", "bogus"],
            "unknown device 'bogus'",
        ),
    ],
)
def test_errors_exit_2_with_one_line(argv, message, tmp_path, archive, db, capsys):
    argv = [a.format(tmp=tmp_path, archive=archive, db=db) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "d.chorus").exists()  # refused before anything was written


def test_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed"])
    assert exc.value.code == 2


def test_models_import_then_embed_finds_the_weights(tmp_path, archive, monkeypatch, capsys):
    from embedder.models.perch import PerchConfig, random_net, state_dict_to_flax

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    config = PerchConfig()
    flax = state_dict_to_flax(random_net(config, seed=3).state_dict(), config)
    np.savez(tmp_path / "perch.npz", **flax)
    assert main(["models", "list"]) == 0
    assert "perch" in capsys.readouterr().out
    assert main(["models", "import", "perch", str(tmp_path / "perch.npz")]) == 0
    assert "installed" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert str(tmp_path / "home") in capsys.readouterr().out

    small = tmp_path / "small"
    (small / "A").mkdir(parents=True)
    sf.write(
        small / "A" / "a.wav",
        np.random.default_rng(0).standard_normal(SR * 6).astype(np.float32) * 0.1,
        SR,
    )
    db = tmp_path / "p.chorus"
    assert main(["embed", str(small), "--db", str(db), "--model", "perch", "--no-progress"]) == 0
    assert "perch: embedded 1 recordings" in capsys.readouterr().out
    meta = json.loads((db / "chorus.json").read_text())
    assert meta["models"]["perch"]["trained"] is True
    assert meta["models"]["perch"]["weights_sha256"]
    assert meta["models"]["perch"]["dim"] == 1536


def test_untrained_model_only_on_request_and_recorded(tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    sf.write(
        small / "a.wav",
        np.random.default_rng(0).standard_normal(SR * 5).astype(np.float32) * 0.1,
        SR,
    )
    db = tmp_path / "u.chorus"
    assert main(["embed", str(small), "--db", str(db), "--model", "perch"]) == 2
    assert "--allow-untrained" in capsys.readouterr().err
    argv = ["embed", str(small), "--db", str(db), "--model", "perch", "--allow-untrained"]
    argv += ["--device", "cpu", "--precision", "bf16", "--backend", "torch", "--no-progress"]
    if cpu_bf16_problem() is not None:  # this CPU refuses bf16 (see the test below); use fp32
        argv[argv.index("bf16")] = "fp32"
    assert main(argv) == 0
    meta = json.loads((db / "chorus.json").read_text())
    perch = meta["models"]["perch"]
    assert perch["trained"] is False and perch["weights"] is None
    # --precision and --backend reached the model
    assert perch["precision"] == argv[argv.index("--precision") + 1]
    assert perch["backend"] == "torch"


def test_bf16_on_a_cpu_without_it_is_one_line_and_exit_2(tmp_path, archive, monkeypatch, capsys):
    import embedder.runtime

    monkeypatch.setattr(embedder.runtime, "cpu_bf16_problem", lambda: "no bf16 here")
    argv = ["embed", str(archive), "--db", str(tmp_path / "d.chorus"), "--model", "perch"]
    assert main([*argv, "--allow-untrained", "--device", "cpu", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bf16 is not supported on this CPU (no bf16 here)" in err[0], err
    assert not (tmp_path / "d.chorus").exists()


def test_models_import_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"params/Nope/kernel": np.zeros(3)})
    assert main(["models", "import", "perch", str(bad)]) == 2
    assert main(["models", "import", "spectral", str(bad)]) == 2
    assert main(["models", "import", "perch", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("chorus models: error:") for line in err)


def test_embed_keeps_the_faiss_index_current(db, archive, capsys):
    import index

    state = index.connect(db).index_state("spectral")
    assert state["state"] == "current" and state["n_vectors"] == 16
    argv = ["embed", str(archive), "--db", str(db), "--no-progress", "--index", "HNSW32,Flat"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().endswith("index HNSW32,Flat")
    assert index.connect(db).index_state("spectral")["factory"] == "HNSW32,Flat"
    assert main(argv[:-2] + ["--rebuild-index"]) == 0  # auto again: float16 Flat at this size
    assert index.connect(db).index_state("spectral")["factory"] == "SQfp16"


def test_two_models_in_one_database(tmp_path, capsys):
    small = tmp_path / "small" / "A"
    small.mkdir(parents=True)
    noise = np.random.default_rng(1).standard_normal(SR * 7).astype(np.float32) * 0.1
    sf.write(small / "a.wav", noise, SR)
    db = tmp_path / "two.chorus"
    assert main(["embed", str(small.parent), "--db", str(db), "--no-progress"]) == 0
    argv = ["embed", str(small.parent), "--db", str(db), "--model", "perch", "--allow-untrained"]
    assert main(argv + ["--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "spectral: 2 windows" in out and "perch: 2 windows" in out
    assert "recordings  1 " in out  # one recording, embedded by both models
    q = f"{small / 'a.wav'}@0-5"
    for model in ("spectral", "perch"):
        assert (
            main(
                ["search", "--db", str(db), "--model", model, "--query", q]
                + ["--format", "json", "--include-query"]
            )
            == 0
        )
        hits = json.loads(capsys.readouterr().out)
        assert len(hits) == 2 and hits[0]["start_s"] == 0.0


@pytest.mark.parametrize("text", ["", "garbage{", '["a list"]', '{"audio_roots": 5}'])
def test_a_damaged_chorus_json_gives_one_line_from_every_verb(tmp_path, archive, db, text, capsys):
    import shutil

    broken = tmp_path / "broken.chorus"
    shutil.copytree(db, broken)
    (broken / "chorus.json").write_text(text)
    verbs = [
        ["info", "--db", str(broken)],
        ["search", "--db", str(broken), "--model", "spectral", "--query", str(archive / "A" / "A_20240610_050000.wav")],
        ["embed", str(archive), "--db", str(broken), "--no-progress"],
        ["label", "--db", str(broken), "--list"],
    ]  # fmt: skip
    for argv in verbs:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code in (1, 2) and "\n" not in err and "chorus.json" in err, (argv, err)
    assert main(["check", "--db", str(broken)]) == 1
    assert capsys.readouterr().out.startswith("DAMAGED chorus.json")


def test_check_says_the_database_is_sound_then_finds_a_damaged_index(db, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy.chorus"
    shutil.copytree(db, copy)
    assert main(["check", "--db", str(copy)]) == 0
    assert "0 damaged" in capsys.readouterr().out
    # the generation file (a copy unlinks it from the stable name spectral.index)
    (index_file,) = (copy / "faiss").glob("spectral.*[0-9a-f].index")
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))
    assert main(["check", "--db", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED index spectral" in out and "rebuilds it" in out
    assert main(["check", "--db", str(copy), "--repair"]) == 0
    assert main(["check", "--db", str(copy)]) == 0


def test_a_query_that_is_a_stored_window_uses_its_vector_without_the_model(db, archive):
    """`chorus search --query PATH@S-E` naming a stored window answers from the database alone
    (no decoder, no model), with the vector the audio would give."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import index
    from explorer.commands.search import resolve_span, stored_window
    from explorer.ingest import embed_span

    d = index.connect(db)
    span, rid = resolve_span(d, "A/A_20240610_050000.wav@10-15")
    stored = stored_window(d, "spectral", rid, span)
    fresh = embed_span(d, "spectral", span.path, 10.0, 15.0)
    assert stored is not None and float(stored @ fresh / np.linalg.norm(fresh)) > 0.9999
    code = (
        "import json, sys\nfrom explorer.cli import main\n"
        f"main(['search', '--db', {str(db)!r}, '--query', 'A/A_20240610_050000.wav@10-15'])\n"
        "print(json.dumps([m for m in ('embedder.audio', 'scipy', 'torch') if m in sys.modules]))\n"
    )
    root = str(Path(index.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root, OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "B/B_20240610_050000.wav" in out.stdout  # the other files' windows at 10-15 s
