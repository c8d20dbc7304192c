"""BirdNET-Analyzer's outputs as labels: its CSV and its Raven tables, per file and combined."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from agile_synth import make_synth_db

from explorer.cli import main
from index.labels import list_labels
from index.raven import read_annotations

CSV_HEADER = "Start (s),End (s),Scientific name,Common name,Confidence"
RAVEN_HEADER = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
    "Common Name\tSpecies Code\tConfidence"
)


@pytest.fixture
def synth(tmp_path):
    return make_synth_db(tmp_path / "db", n_recordings=3, windows_per_recording=12)


def _stem(synth, i: int) -> str:
    return Path(synth.db.recordings()["path"].iloc[i]).stem


def _labels(synth) -> pd.DataFrame:
    return list_labels(synth.db).sort_values("start_s").reset_index(drop=True)


def test_csv_per_file_names_its_recording_and_drops_low_confidence(synth, tmp_path, capsys):
    table = tmp_path / f"{_stem(synth, 1)}.BirdNET.results.csv"
    table.write_text(
        f"{CSV_HEADER}\n"
        "0.0,3.0,Catharus fuscescens,Veery,0.8123\n"
        "3.0,6.0,Catharus fuscescens,Veery,0.1500\n"
        "6.0,9.0,Turdus migratorius,American Robin,0.2500\n"
    )
    assert main(["label", "--db", str(synth.db.path), "--import", str(table)]) == 0
    assert "imported 2 labels" in capsys.readouterr().out
    got = _labels(synth)
    assert got["label"].tolist() == ["Veery", "American Robin"]  # common name, >= 0.25
    rid = int(synth.db.recordings()["recording_id"].iloc[1])
    assert (got["recording_id"] == rid).all() and (got["kind"] == "positive").all()
    assert got["source"].iloc[0] == f"import:{table.name}"


def test_raven_table_labels_by_common_name_not_species_code(synth, tmp_path, capsys):
    table = tmp_path / f"{_stem(synth, 0)}.BirdNET.selection.table.txt"
    rows = [
        "1\tSpectrogram 1\t1\t0.0\t3.0\t150\t15000\tVeery\tveery\t0.91",
        "2\tSpectrogram 1\t1\t3.0\t6.0\t150\t15000\tWood Thrush\twoothr\t0.10",
    ]
    table.write_text("\n".join([RAVEN_HEADER, *rows]) + "\n")
    args = ["label", "--db", str(synth.db.path), "--import", str(table)]
    assert main([*args, "--min-confidence", "0.05", "--unsure"]) == 0
    got = _labels(synth)
    assert got["label"].tolist() == ["Veery", "Wood Thrush"]
    assert (got["kind"] == "unsure").all()
    frame = read_annotations(table, label_column="Species Code")
    assert frame["label"].tolist() == ["veery", "woothr"]
    assert frame["confidence"].tolist() == [0.91, 0.10]


def test_combined_table_finds_recordings_by_its_file_column(synth, tmp_path, capsys):
    recs = synth.db.recordings()
    lines = [f"{CSV_HEADER},File"]
    for path in recs["path"]:
        lines.append(f"0.0,3.0,Strix varia,Barred Owl,0.9,/elsewhere/{Path(path).name}")
    table = tmp_path / "BirdNET_CombinedTable.csv"
    table.write_text("\n".join(lines) + "\n")
    assert main(["label", "--db", str(synth.db.path), "--import", str(table)]) == 0
    assert sorted(_labels(synth)["recording_id"]) == sorted(recs["recording_id"])


def test_a_table_that_names_no_recording_and_bad_confidence_are_one_line(synth, tmp_path, capsys):
    table = tmp_path / "results.csv"  # no File column, and the name is not <recording>.BirdNET.*
    table.write_text(f"{CSV_HEADER}\n0.0,3.0,Strix varia,Barred Owl,0.9\n")
    args = ["label", "--db", str(synth.db.path), "--import", str(table)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "no file column" in err and len(err.splitlines()) == 1
    assert main([*args, "--min-confidence", "1.5"]) == 2
    assert "--min-confidence" in capsys.readouterr().err
    assert list_labels(synth.db).empty
