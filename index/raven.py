"""Read and write annotation tables: Raven selection tables (tab-separated) and plain CSV.

Raven Pro writes one row per selection *and view*: a selection drawn on a spectrogram and shown in a
waveform too appears twice with the same ``Selection`` number. Real-world tables also carry a
byte-order mark, Windows line endings, extra measurement columns and an annotation column whose
name depends on who made the table (``Annotation``, ``Species``, ``Label``, ``Class``, ...).
``read_annotations`` copes with all of that and returns one tidy row per selection; a malformed row
raises ``AnnotationError`` naming the file and the line number.

Times in the tidy form are seconds from the start of the file the selection points into. When a
table covers a list of files (``Begin File`` + ``File Offset (s)``), the offset gives the start in
that file and the selection keeps its duration.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

# Columns of the tidy frame returned by read_annotations and accepted by write_selection_table.
TIDY_COLUMNS = ("file", "path", "start_s", "end_s", "low_hz", "high_hz", "label", "kind", "line")

# Candidate names for the annotation column, in order of preference (compared case-insensitively).
LABEL_COLUMNS = (
    "annotation",
    "label",
    "species",
    "class",
    "sound type",
    "call type",
    "species code",
    "code",
    "type",
    "tag",
    "category",
    "common name",
    "scientific name",
)

# Aliases (lower case) for each tidy field; Raven names first, then common CSV spellings.
_ALIASES = {
    "start_s": (
        "begin time (s)",
        "start (s)",  # BirdNET-Analyzer's CSV
        "start_s",
        "start",
        "begin",
        "start time (s)",
        "begin_s",
        "onset",
    ),
    "end_s": ("end time (s)", "end (s)", "end_s", "end", "stop", "end time", "offset"),
    "low_hz": ("low freq (hz)", "low_hz", "low frequency (hz)", "low_freq", "fmin"),
    "high_hz": ("high freq (hz)", "high_hz", "high frequency (hz)", "high_freq", "fmax"),
    "file": ("begin file", "file", "filename", "file name", "recording", "audio file", "path"),
    "path": ("begin path", "full path", "abs_path"),
    "offset": ("file offset (s)", "file_offset_s"),
    "selection": ("selection",),
    "view": ("view",),
    "kind": ("kind",),
    "confidence": ("confidence",),
}
# BirdNET-Analyzer's tables (its CSV and its Raven tables) carry these; for them the common name is
# the default label (its Raven tables also hold a "Species Code", which would win otherwise).
BIRDNET_COLUMNS = ("common name", "confidence")

# Raven column order used when writing.
_RAVEN_HEADER = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Begin File",
    "Begin Path",
    "File Offset (s)",
    "Annotation",
)
KINDS = ("positive", "negative", "unsure")
SKIP = "skip"  # a row's kind meaning "not labelled" (e.g. a review candidate left undecided)


class AnnotationError(ValueError):
    """A table that cannot be read; the message names the file and line."""


def read_annotations(
    source: str | Path | io.TextIOBase,
    label_column: str | None = None,
    default_label: str | None = None,
    name: str | None = None,
    min_confidence: float | None = None,
) -> pd.DataFrame:
    """Read a Raven selection table or a CSV of annotations into one row per selection.

    Parameters
    ----------
    source : path or text stream
        Tab-separated Raven table (``.txt``/``.tsv``) or comma-separated CSV; sniffed from the header.
    label_column : str, optional
        Name of the annotation column; found among ``LABEL_COLUMNS`` when omitted.
    default_label : str, optional
        Label for every row when the table has no annotation column (or an empty cell).
    name : str, optional
        Name used in error messages (defaults to the file name).
    min_confidence : float, optional
        Leave out rows whose ``Confidence`` is below this; tables without that
        column are unaffected. BirdNET-Analyzer's tables (``Common Name`` + ``Confidence``) are
        labelled by the common name unless ``label_column`` says otherwise.

    Returns
    -------
    pandas.DataFrame
        Columns ``TIDY_COLUMNS`` and ``confidence`` (NaN where the table has none): file (base name or relative path as written), path (absolute path
        from ``Begin Path`` or None), start_s, end_s (float, seconds in that file), low_hz, high_hz
        (float or NaN), label (str), kind ("positive" unless a ``kind`` column says otherwise;
        rows of kind "skip" are left out), line
        (1-based line number of the row in the source).

    Raises
    ------
    AnnotationError
        Missing required columns, or a row with a bad number, end before start, or unknown kind.
    """
    text, name = _read_text(source, name)
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise AnnotationError(f"{name}: empty annotation table")
    if "\t" in lines[0]:  # Raven writes cells raw: a quote is part of the annotation
        rows = [
            [_unquote(c) for c in r]
            for r in csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    else:
        rows = list(csv.reader(lines, delimiter=","))
    header = [h.strip() for h in rows[0]]
    cols = _find_columns(header, label_column, name)
    if "start_s" not in cols or "end_s" not in cols:
        raise AnnotationError(
            f"{name}: line 1: need begin/end time columns (e.g. 'Begin Time (s)', 'End Time (s)'), "
            f"found {header}"
        )
    if "label" not in cols and default_label is None:
        raise AnnotationError(
            f"{name}: line 1: no annotation column (looked for {', '.join(LABEL_COLUMNS)}); "
            "pass label_column or default_label"
        )
    records = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line, common at the end of hand-edited tables
        records.append(_parse_row(row, len(header), cols, lineno, name, default_label))
    df = pd.DataFrame.from_records(
        records, columns=[*TIDY_COLUMNS, "selection", "view", "confidence"]
    )
    df = df[df["kind"] != SKIP].reset_index(drop=True)  # undecided rows are not labels
    if min_confidence is not None:
        df = df[~(df["confidence"] < min_confidence)].reset_index(drop=True)  # NaN stays
    return _dedupe_views(df)


def _unquote(cell: str) -> str:
    # a cell CSV-quoted by an older Chorus export (wrapped in quotes, inner quotes doubled) back
    # to its text; Raven itself never doubles quotes, so a raw cell is left as it is
    inner = cell[1:-1]
    if len(cell) > 2 and cell[0] == cell[-1] == '"' and '""' in inner:
        if '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return cell


def _read_text(source, name: str | None) -> tuple[str, str]:
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise AnnotationError(f"{path}: cannot read: {err.strerror or err}") from err
        name = name or path.name
        # utf-8-sig strips the BOM Raven and Excel like to write; Windows tools write cp1252
        # (curly quotes, dashes), and latin-1 takes whatever bytes cp1252 leaves undefined.
        for encoding in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    else:
        text = source.read().lstrip("\ufeff")
        name = name or getattr(source, "name", "<table>")
    return text, str(name)


def _find_columns(header: list[str], label_column: str | None, name: str) -> dict[str, int]:
    lower = [h.lower() for h in header]
    cols: dict[str, int] = {}
    for field, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lower:
                cols[field] = lower.index(alias)
                break
    if label_column is not None:
        if label_column.lower() not in lower:
            raise AnnotationError(f"{name}: line 1: no column {label_column!r} in {header}")
        cols["label"] = lower.index(label_column.lower())
    elif all(c in lower for c in BIRDNET_COLUMNS):
        cols["label"] = lower.index("common name")
    else:
        for alias in LABEL_COLUMNS:
            if alias in lower:
                cols["label"] = lower.index(alias)
                break
    return cols


def _parse_row(row, width, cols, lineno, name, default_label) -> tuple:
    if len(row) > width and any(c.strip() for c in row[width:]):
        raise AnnotationError(f"{name}: line {lineno}: {len(row)} fields, header has {width}")

    def cell(field: str) -> str:
        i = cols.get(field)
        return row[i].strip() if i is not None and i < len(row) else ""

    def number(field: str, required: bool) -> float:
        value = cell(field)
        if not value:
            if required:
                raise AnnotationError(f"{name}: line {lineno}: missing {field}")
            return math.nan
        try:
            x = float(value.replace(",", ".") if "," in value and "." not in value else value)
        except ValueError:
            raise AnnotationError(f"{name}: line {lineno}: bad {field} {value!r}") from None
        if not math.isfinite(x) or x < 0:
            raise AnnotationError(f"{name}: line {lineno}: bad {field} {value!r}")
        return x

    start, end = number("start_s", True), number("end_s", True)
    if end <= start:
        raise AnnotationError(f"{name}: line {lineno}: end {end} is not after begin {start}")
    offset = number("offset", False)
    if not math.isnan(offset):  # selection inside a file list: keep duration, move to file time
        start, end = offset, offset + (end - start)
    low, high = number("low_hz", False), number("high_hz", False)
    if not math.isnan(low) and not math.isnan(high) and high < low:
        raise AnnotationError(f"{name}: line {lineno}: high freq {high} below low freq {low}")
    label = cell("label") or default_label
    if not label:
        raise AnnotationError(f"{name}: line {lineno}: empty annotation")
    kind = (cell("kind") or "positive").lower()
    if kind not in (*KINDS, SKIP):
        raise AnnotationError(f"{name}: line {lineno}: kind {kind!r} not in {(*KINDS, SKIP)}")
    path = cell("path") or None
    file = cell("file") or (PureWindowsPath(path).name if path else None)
    confidence = number("confidence", False)
    return (
        file, path, start, end, low, high, label, kind, lineno, cell("selection"), cell("view"),
        confidence,
    )  # fmt: skip


def _dedupe_views(df: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per selection: Raven repeats a selection once per view (spectrogram, waveform)."""
    if df.empty:
        return df[[*TIDY_COLUMNS, "confidence"]]
    # Prefer the spectrogram row: only it carries meaningful frequency bounds.
    order = (~df["view"].str.lower().str.startswith("spectrogram")).astype(int)
    df = df.assign(_order=order).sort_values(["_order", "line"], kind="stable")
    has_sel = df["selection"] != ""
    key_cols = ["file", "path", "start_s", "end_s", "label"]
    dup = np.zeros(len(df), dtype=bool)
    dup[has_sel.to_numpy()] = df[has_sel].duplicated(["selection", *key_cols]).to_numpy()
    no_sel = ~has_sel.to_numpy()
    dup[no_sel] = df[~has_sel].duplicated([*key_cols, "low_hz", "high_hz"]).to_numpy()
    out = df[~dup].sort_values("line")
    return out[[*TIDY_COLUMNS, "confidence"]].reset_index(drop=True)


def write_selection_table(df: pd.DataFrame, path: str | Path, extra: tuple[str, ...] = ()) -> Path:
    """Write rows as a Raven selection table (tab-separated, one Spectrogram view row each).

    Parameters
    ----------
    df : pandas.DataFrame
        Columns start_s, end_s, label, and optionally file (``Begin File``), path (``Begin Path``,
        absolute), low_hz, high_hz (NaN -> 0 / empty) and any names in ``extra`` (e.g. "score",
        "kind") written as additional columns after ``Annotation``.
    path : str or Path
        Output file; parent folders are created.
    extra : tuple of str
        Additional columns to write, named as given.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.sort_values("start_s", kind="stable").reset_index(drop=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(_raven_line([*_RAVEN_HEADER, *extra]))
        for i, r in enumerate(df.to_dict("records"), start=1):  # any column name, spaces too
            start, end = float(r["start_s"]), float(r["end_s"])
            fh.write(
                _raven_line(
                    [
                        i,
                        "Spectrogram 1",
                        1,
                        _fmt(start),
                        _fmt(end),
                        _fmt(r.get("low_hz", math.nan), empty="0"),
                        _fmt(r.get("high_hz", math.nan)),
                        r.get("file") or "",
                        r.get("path") or "",
                        _fmt(start),
                        r["label"],
                        *(_fmt(r[c]) if isinstance(r[c], float) else r[c] for c in extra),
                    ]
                )
            )
    return path


def _raven_line(cells: list) -> str:
    # Raven neither quotes nor escapes: a tab or line break inside a cell would split it
    return (
        "\t".join(str(c).replace("\t", " ").replace("\r", " ").replace("\n", " ") for c in cells)
        + "\n"
    )


def _fmt(x, empty: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return empty
    return f"{float(x):.6f}".rstrip("0").rstrip(".") if float(x) != int(x) else str(int(x))
