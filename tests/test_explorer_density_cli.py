"""``chorus density`` and ``chorus activity`` on a synthetic database: one validation round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from explorer.cli import main
from index.labels import add_label
from index.probe import train_probe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    synth = make_synth_db(tmp_path_factory.mktemp("dcli"), n_recordings=4, seed=7)
    for t in synth.truth.query("call_type == 'owl' and recording_id <= 2").itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    rec = train_probe(synth.db, MODEL, "owl")
    return synth, rec


def test_density_prints_the_table_and_the_export_imports_back(trained, tmp_path, capsys):
    synth, rec = trained
    db, todo = str(synth.db.path), tmp_path / "todo.csv"
    args = ["density", "--db", db, "--probe", str(rec.probe_id), "--by", "site,date"]
    assert main([*args, "--per-stratum", "3", "--export", str(todo)]) == 0
    out, err = capsys.readouterr()
    assert "90% interval" in out and "2024-05-01" in out and "/12" in out
    assert "validations done" in err and f"--import {todo}" in err
    rows = pd.read_csv(todo)
    assert set(rows["kind"]) == {"skip"}
    truth = synth.windows.set_index(["recording_id", "start_s"])["call_type"]
    rid = rows["path"].map(synth.db.recordings().set_index("path")["recording_id"])
    owl = [truth[(r, s)] == "owl" for r, s in zip(rid, rows["start_s"], strict=True)]
    rows.assign(kind=np.where(owl, "positive", "negative")).to_csv(todo, index=False)
    assert main(["label", "--db", db, "--import", str(todo)]) == 0
    capsys.readouterr()
    assert main([*args, "--per-stratum", "3"]) == 0
    out, err = capsys.readouterr()
    assert "—" not in out  # every stratum validated: a density for every group
    done = [line.split()[-1] for line in out.splitlines()[1:]]
    assert done and all(d.split("/")[0] == d.split("/")[1] for d in done)


def test_density_and_activity_refuse_bad_arguments_in_one_line(trained, capsys):
    synth, rec = trained
    db, pid = str(synth.db.path), str(rec.probe_id)
    assert main(["density", "--db", db, "--probe", pid, "--by", "fortnight"]) == 2
    assert "--by takes" in capsys.readouterr().err
    assert main(["density", "--db", db, "--probe", pid, "--export", "x.txt"]) == 2
    assert main(["density", "--db", db, "--probe", "999"]) == 2
    assert main(["activity", "--db", db, "--probe", pid, "--out", "x.xlsx"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3


def test_activity_writes_csv_and_parquet(trained, tmp_path, capsys):
    synth, rec = trained
    db, pid = str(synth.db.path), str(rec.probe_id)
    for name in ("a.csv", "a.parquet"):
        out = tmp_path / name
        args = ["activity", "--db", db, "--probe", pid, "--by", "site,hour", "--out", str(out)]
        assert main([*args, "--threshold", "0.5"]) == 0
        t = pd.read_csv(out) if name.endswith(".csv") else pd.read_parquet(out)
        assert list(t.columns[:5]) == ["site", "hour", "windows", "detections", "rate"]
        assert t["windows"].sum() == len(synth.windows)
    assert "windows scoring >= 0.500" in capsys.readouterr().err
    assert main(["activity", "--db", db, "--probe", pid, "--stored"]) == 2
    assert "chorus classify" in capsys.readouterr().err
