"""The agile-loop CLI verbs (label, train, classify, cluster, export) on a synthetic database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agile_synth import make_synth_db

from explorer.cli import main
from index.raven import read_annotations


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth_db(tmp_path_factory.mktemp("cli"), n_recordings=6, windows_per_recording=30)


def _db(synth) -> str:
    return str(synth.db.path)


def test_label_add_list_remove(synth, capsys):
    db = _db(synth)
    path = synth.root / "site0" / "rec00.wav"
    assert main(["label", "--db", db, "--add", f"{path}@10-12.5", "frog"]) == 0
    assert "label 1: frog (positive)" in capsys.readouterr().out
    assert main(["label", "--db", db, "--add", "site1/rec01.wav@0-5", "frog", "--negative"]) == 0
    capsys.readouterr()
    assert main(["label", "--db", db, "--list", "--label", "frog", "--format", "csv"]) == 0
    rows = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert rows["kind"].tolist() == ["positive", "negative"]
    assert rows["path"].tolist() == ["site0/rec00.wav", "site1/rec01.wav"]
    assert main(["label", "--db", db, "--remove", "1"]) == 0
    assert main(["label", "--db", db, "--remove", "2"]) == 0
    capsys.readouterr()
    assert main(["label", "--db", db, "--list", "--label", "frog"]) == 0
    assert capsys.readouterr().out.strip() == "no labels"


def test_label_remove_takes_several_ids_or_a_filter(synth, capsys):
    db = _db(synth)
    for start in (0, 5, 10, 15):
        kind = ["--negative"] if start >= 10 else []
        assert (
            main(
                ["label", "--db", db, "--add", f"site0/rec00.wav@{start}-{start + 5}", "toad"]
                + kind
            )
            == 0
        )
    ids = [int(x.split()[1].rstrip(":")) for x in capsys.readouterr().out.splitlines()]
    assert main(["label", "--db", db, "--remove", str(ids[0]), str(ids[1])]) == 0
    assert capsys.readouterr().out.strip() == f"removed 2 label(s): {ids[0]}, {ids[1]}"
    assert main(["label", "--db", db, "--remove", "--label", "toad", "--kind", "negative"]) == 0
    assert capsys.readouterr().out.strip() == f"removed 2 label(s): {ids[2]}, {ids[3]}"
    assert main(["label", "--db", db, "--remove"]) == 2  # no ids, no filter: never "all"
    assert "say which labels to remove" in capsys.readouterr().err
    assert main(["label", "--db", db, "--remove", str(ids[0])]) == 2
    assert f"no label with id {ids[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--add", "site0/rec00.wav@5-2", "x"], "END must be greater than START"),
        (["--add", "site0/rec00.wav", "x"], "--add needs FILE@START-END"),
        (["--add", "ghost.wav@0-1", "x"], "no recording in the database matches"),
        (["--remove", "999"], "no label with id 999"),
    ],
)
def test_label_errors_exit_2(synth, capsys, argv, message):
    assert main(["label", "--db", _db(synth), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_import_train_classify_export(synth, tmp_path, capsys):
    db = _db(synth)
    owl = synth.truth.query("call_type == 'owl' and recording_id < 4")
    table = pd.DataFrame(
        {
            "Selection": range(1, len(owl) + 1),
            "Begin Time (s)": owl["start_s"],
            "End Time (s)": owl["end_s"],
            "Begin File": owl["path"].str.rsplit("/", n=1).str[-1],
            "Species": "owl",
        }
    )
    raven = tmp_path / "owl.txt"
    table.to_csv(raven, sep="\t", index=False)
    assert main(["label", "--db", db, "--import", str(raven)]) == 0
    assert f"imported {len(owl)} labels" in capsys.readouterr().out

    assert main(["train", "--db", db, "--label", "owl", "--weak-negatives", "0.05"]) == 0
    out = capsys.readouterr().out
    assert f"owl: {len(owl)} positive" in out and "AP " in out and "ROC-AUC" in out
    probe_id = int(out.split("\nprobe ")[1].split()[0])

    det_csv = tmp_path / "det.csv"
    assert (
        main(
            [
                "classify",
                "--db",
                db,
                "--probe",
                str(probe_id),
                "--threshold",
                "0.5",
                "--out",
                str(det_csv),
            ]
        )
        == 0
    )
    summary = capsys.readouterr().out
    det = pd.read_csv(det_csv)
    assert summary.startswith(f"{len(det)} detections") and (det["score"] >= 0.5).all()
    assert {"path", "start_s", "end_s", "score"} <= set(det.columns)
    det_txt = tmp_path / "det.txt"
    assert (
        main(
            [
                "classify",
                "--db",
                db,
                "--probe",
                str(probe_id),
                "--precision",
                "0.9",
                "--out",
                str(det_txt),
            ]
        )
        == 0
    )
    assert read_annotations(det_txt)["path"].str.startswith(str(synth.root)).all()

    assert (
        main(
            [
                "export",
                "--db",
                db,
                "--detections",
                str(probe_id),
                "--format",
                "raven",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "r").glob("*.selections.txt"))) >= 1
    assert (
        main(
            [
                "export",
                "--db",
                db,
                "--labels",
                "--format",
                "parquet",
                "--out",
                str(tmp_path / "l.parquet"),
            ]
        )
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "l.parquet")) == len(owl)
    capsys.readouterr()
    assert main(["classify", "--db", db, "--probe", "77"]) == 2
    assert "no probe with id 77" in capsys.readouterr().err


def test_train_without_positives_exits_2(synth, capsys):
    assert main(["train", "--db", _db(synth), "--label", "unicorn"]) == 2
    assert "no 'synth' windows under a positive 'unicorn' label" in capsys.readouterr().err


def test_train_with_one_positive_refuses_in_one_line(tmp_path, capsys):
    synth = make_synth_db(tmp_path, n_recordings=3, windows_per_recording=10)
    assert main(["label", "--db", _db(synth), "--add", "site0/rec00.wav@10-15", "owl"]) == 0
    capsys.readouterr()
    assert main(["train", "--db", _db(synth), "--label", "owl"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label 1 more positive window(s)" in err
    assert main(["classify", "--db", _db(synth), "--probe", "1"]) == 2  # nothing was stored


def test_classify_says_when_the_target_precision_is_unreachable(synth, capsys):
    from index.probe import LinearProbe, ProbeRecord, store_probe

    dim = synth.db.snapshot("synth").dim
    curve = {"threshold": [0.001, 0.3], "precision": [0.2, 0.4], "recall": [1.0, 0.5]}
    probe = LinearProbe.from_weights(np.zeros((1, dim)), np.zeros(1))
    rec = ProbeRecord(-1, "synth", ["owl"], probe, [0.5], [{"pr_curve": curve}], {}, {})
    probe_id = store_probe(synth.db, rec)
    assert (
        main(["classify", "--db", _db(synth), "--probe", str(probe_id), "--precision", "0.9"]) == 0
    )
    out = capsys.readouterr().out
    assert (
        "owl: target precision 0.9 is unreachable; the best cross-validated precision is "
        "0.400 (recall 0.500) at threshold 0.300, which is used" in out
    )


def test_train_prints_folds_and_uncertainty(synth, capsys):
    assert main(["train", "--db", _db(synth), "--label", "owl", "--precision", "0.99"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-recording-out" in out and "recordings/positives:" in out
    assert "AP 90% interval" in out


def test_list_into_a_closed_pipe_is_quiet(synth, capsys, monkeypatch):
    # `chorus label --list | head` once ended with "error: Broken pipe"
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["label", "--db", _db(synth), "--list"]) == 0
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_cluster_on_few_windows_keeps_faiss_quiet(synth, capfd):
    # 180 windows into 50 clusters: FAISS would ask for 1950 training points on stderr
    assert main(["cluster", "--db", _db(synth), "--k", "50"]) == 0
    assert "training points" not in capfd.readouterr().err


def test_review_round_trip_through_label_import(tmp_path, capsys):
    from index.labels import add_label, list_labels

    synth = make_synth_db(tmp_path, n_recordings=6, windows_per_recording=30)
    owls = synth.truth.query("call_type == 'owl' and recording_id < 3")
    for t in owls.itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    db = _db(synth)
    assert main(["train", "--db", db, "--label", "owl"]) == 0
    probe_id = int(capsys.readouterr().out.split("\nprobe ")[1].split()[0])
    out = tmp_path / "round1.csv"
    argv = ["review", "--db", db, "--probe", str(probe_id), "--batch", "8", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"owl: {len(owls)} positive, 0 negative, 0 unsure labels; probe" in err
    assert "CV AP" in err
    round1 = pd.read_csv(out)
    assert len(round1) == 8 and set(round1["kind"]) == {"skip"} and set(round1["label"]) == {"owl"}
    # the reviewer decides six windows from the truth and leaves two undecided
    truth = synth.windows.merge(synth.db.recordings()[["recording_id", "path"]])
    owl = round1.merge(truth, on=["path", "start_s"], how="left")["call_type"].eq("owl")
    round1["kind"] = owl.map({True: "positive", False: "negative"})
    round1.loc[6:, "kind"] = "skip"
    round1.to_csv(out, index=False)
    before = len(list_labels(synth.db, label="owl"))
    assert main(["label", "--db", db, "--import", str(out)]) == 0
    assert len(list_labels(synth.db, label="owl")) == before + 6
    assert main(["train", "--db", db, "--label", "owl"]) == 0
    assert main(["review", "--db", db, "--probe", str(probe_id), "--batch", "0"]) == 2
    capsys.readouterr()
    assert main(["review", "--db", db, "--probe", str(probe_id), "--label", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"probe {probe_id} has no label 'nope' (it has owl)" in err


def test_cluster_prints_clusters(synth, tmp_path, capsys):
    out = tmp_path / "a.csv"
    assert main(["cluster", "--db", _db(synth), "--k", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("cluster ") >= 3 and "3 clusters over 180 windows" in text
    assert len(pd.read_csv(out)) == 180
    assert main(["cluster", "--db", _db(synth), "--k", "500"]) == 2
    assert "k must be between 1" in capsys.readouterr().err


def test_missing_db_exits_2(tmp_path, capsys):
    assert main(["train", "--db", str(tmp_path / "none"), "--label", "x"]) == 2
    assert "no Chorus database" in capsys.readouterr().err
