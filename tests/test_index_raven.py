"""Raven selection tables and CSV annotations: variants seen in the field, round trips, bad rows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from index.raven import AnnotationError, read_annotations, write_selection_table

RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
    "Begin File\tBegin Path\tFile Offset (s)\tDelta Time (s)\tSpecies\n"
    "1\tSpectrogram 1\t1\t1.5\t3.0\t2000\t6000\tA.wav\tC:\\data\\A.wav\t1.5\t1.5\tWREN\n"
    "1\tWaveform 1\t1\t1.5\t3.0\t0\t16000\tA.wav\tC:\\data\\A.wav\t1.5\t1.5\tWREN\n"
    "2\tSpectrogram 1\t1\t601.0\t603.5\t500\t1500\tB.wav\tC:\\data\\B.wav\t1.0\t2.5\tOWL\n"
    "2\tWaveform 1\t1\t601.0\t603.5\t0\t16000\tB.wav\tC:\\data\\B.wav\t1.0\t2.5\tOWL\n"
)


def test_raven_views_deduped_and_file_offsets_applied(tmp_path):
    path = tmp_path / "sel.txt"
    # BOM + Windows line endings, as Raven on Windows writes them.
    path.write_bytes(b"\xef\xbb\xbf" + RAVEN.replace("\n", "\r\n").encode())
    df = read_annotations(path)
    assert len(df) == 2  # waveform duplicates removed
    assert df["label"].tolist() == ["WREN", "OWL"]
    assert df["file"].tolist() == ["A.wav", "B.wav"]
    assert df["path"].tolist() == ["C:\\data\\A.wav", "C:\\data\\B.wav"]
    # The spectrogram row wins: its frequency bounds are the meaningful ones.
    assert df["low_hz"].tolist() == [2000.0, 500.0]
    # B's selection sits at 601 s in the file list but at 1.0 s in B.wav; duration is kept.
    assert df.loc[1, ["start_s", "end_s"]].tolist() == [1.0, 3.5]
    assert df["line"].tolist() == [2, 4]
    assert set(df["kind"]) == {"positive"}


@pytest.mark.parametrize("column", ["Annotation", "Label", "Class", "Sound Type", "species"])
def test_annotation_column_names(column):
    text = f"Begin Time (s)\tEnd Time (s)\t{column}\n0\t5\tfrog\n"
    assert read_annotations(io.StringIO(text))["label"].tolist() == ["frog"]


def test_explicit_label_column_and_default_label():
    text = "Begin Time (s)\tEnd Time (s)\tNotes\tSpecies\n0\t5\tloud\tfrog\n"
    assert read_annotations(io.StringIO(text), label_column="Notes")["label"][0] == "loud"
    no_label = "Begin Time (s)\tEnd Time (s)\n0\t5\n"
    assert read_annotations(io.StringIO(no_label), default_label="bat")["label"][0] == "bat"
    with pytest.raises(AnnotationError, match="no annotation column"):
        read_annotations(io.StringIO(no_label))


def test_csv_with_kind_column():
    text = "file,start_s,end_s,label,kind\nx/a.flac,0,5,owl,positive\nx/a.flac,5,10,owl,negative\n"
    df = read_annotations(io.StringIO(text))
    assert df["kind"].tolist() == ["positive", "negative"]
    assert df["file"].tolist() == ["x/a.flac", "x/a.flac"]
    assert np.isnan(df["low_hz"]).all()


@pytest.mark.parametrize(
    "row, message",
    [
        ("3\tSpectrogram 1\t1\tabc\t4\tfrog", "line 3: bad start_s 'abc'"),
        ("3\tSpectrogram 1\t1\t4\t2\tfrog", "line 3: end 2.0 is not after begin 4.0"),
        ("3\tSpectrogram 1\t1\t\t2\tfrog", "line 3: missing start_s"),
        ("3\tSpectrogram 1\t1\t1\t2\t", "line 3: empty annotation"),
        ("3\tSpectrogram 1\t1\t1\t2\tfrog\textra", "line 3: 7 fields"),
    ],
)
def test_malformed_row_names_its_line(tmp_path, row, message):
    path = tmp_path / "bad.txt"
    header = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
    path.write_text(header + "1\tSpectrogram 1\t1\t0\t1\tfrog\n" + row + "\n")
    with pytest.raises(AnnotationError, match=rf"bad.txt: {message}"):
        read_annotations(path)


def test_missing_time_columns_rejected():
    with pytest.raises(AnnotationError, match="line 1: need begin/end time columns"):
        read_annotations(io.StringIO("a\tb\n1\t2\n"))


def test_round_trip(tmp_path):
    df = pd.DataFrame(
        {
            "file": ["a.wav", "a.wav", "a.wav"],
            "path": ["/data/a.wav"] * 3,
            "start_s": [10.0, 0.25, 3.125],
            "end_s": [15.0, 5.25, 4.5],
            "low_hz": [100.0, np.nan, 300.0],
            "high_hz": [8000.0, 16000.0, 4000.0],
            "label": ["owl", "owl", "wren"],
            "score": [0.9, 0.75, 0.5],
        }
    )
    out = write_selection_table(df, tmp_path / "sub" / "a.Table.1.selections.txt", extra=("score",))
    lines = out.read_text().splitlines()
    assert lines[0].split("\t")[:5] == [
        "Selection",
        "View",
        "Channel",
        "Begin Time (s)",
        "End Time (s)",
    ]
    back = read_annotations(out)
    want = df.sort_values("start_s").reset_index(drop=True)
    np.testing.assert_allclose(back["start_s"], want["start_s"])
    np.testing.assert_allclose(back["end_s"], want["end_s"])
    np.testing.assert_allclose(back["high_hz"], want["high_hz"])
    assert back["low_hz"].tolist() == [0.0, 300.0, 100.0]  # unknown low bound written as 0 Hz
    assert back["label"].tolist() == want["label"].tolist()
    assert back["path"].tolist() == ["/data/a.wav"] * 3
    assert pd.read_csv(out, sep="\t")["score"].tolist() == [0.75, 0.5, 0.9]


def test_raven_cells_are_raw_text_quotes_included():
    # Raven writes cells unquoted: a leading quote must not swallow the rows after it
    table = (
        "Selection\tView\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
        '1\tSpectrogram 1\t1.0\t2.0\t"unknown call\n'
        "2\tSpectrogram 1\t3.0\t4.0\towl\n"
        '3\tSpectrogram 1\t5.0\t6.0\t"chip" call\n'
    )
    assert read_annotations(io.StringIO(table))["label"].tolist() == [
        '"unknown call',
        "owl",
        '"chip" call',
    ]


def test_written_labels_and_extra_columns_survive_a_round_trip(tmp_path):
    df = pd.DataFrame(
        {
            "start_s": [1.0, 2.0, 3.0],
            "end_s": [1.5, 2.5, 3.5],
            "label": ['say "hi"', "tab\there", "line\r\nbreak"],
            "Common Name": ["a", "b", "c"],
        }
    )
    out = write_selection_table(df, tmp_path / "t.txt", extra=("Common Name",))
    assert '"""' not in out.read_text()  # no CSV quoting, which Raven would show as is
    back = read_annotations(out)
    assert back["label"].tolist() == ['say "hi"', "tab here", "line  break"]
    assert pd.read_csv(out, sep="\t")["Common Name"].tolist() == ["a", "b", "c"]


def test_windows_encoded_table_keeps_its_punctuation(tmp_path):
    path = tmp_path / "sel.txt"
    text = "Begin Time (s)\tEnd Time (s)\tAnnotation\n1\t2\tBewick\u2019s wren \u2013 song\n"
    path.write_bytes(text.encode("cp1252"))
    assert read_annotations(path)["label"].tolist() == ["Bewick\u2019s wren \u2013 song"]


def test_tables_quoted_by_older_exports_read_back_as_written():
    table = (
        "Selection\tView\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
        '1\tSpectrogram 1\t1.0\t2.0\t"owl ""juvenile"""\n'
        '2\tSpectrogram 1\t3.0\t4.0\t"owl"\n'  # quotes a Raven user typed stay
    )
    got = read_annotations(io.StringIO(table))["label"].tolist()
    assert got == ['owl "juvenile"', '"owl"']
