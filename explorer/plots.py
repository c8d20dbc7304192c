"""Figure and image builders for the explorer: maps, precision-recall curves, cluster counts, spectrograms.

Everything here is pure: data in, a plotly figure / numpy image / PNG bytes out, so it is unit-tested
without Streamlit. Spectrograms are rendered with NumPy + Pillow (no matplotlib) through a colormap
defined below.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from index.activity import UNDATED  # the bucket of windows whose recording has no start time

N_FFT = 512  # samples per STFT frame
HOP = 128  # samples between STFT frames
TOP_DB = 80.0  # dB: at most this range below the loudest bin is drawn
FLOOR_PERCENTILE = 75.0  # bins at or below this percentile (the noise floor) are drawn darkest
IMAGE_SIZE = (320, 128)  # default spectrogram image (width, height) in pixels
TEMPLATE = "plotly_white"  # figures carry their own look (pages draw them with theme=None)
SCORE_BINS = 50  # bars of the score histogram
MAX_CATEGORIES = 20  # categorical colourings beyond this fold the rarest into "other"
MAP_MARKER_SIZE = 4  # px, for dense maps
SPARSE_MARKER_SIZE = 8  # px, when fewer than SPARSE_POINTS points are shown
SPARSE_POINTS = 2000
CARD_MARGIN = (34, 18)  # px left (kHz labels) and below (time labels) a card's spectrogram
CARD_FONT_PX = 10
CATEGORICAL_COLOURS = (
    "#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf "
    "#393b79 #ad494a #8ca252 #bd9e39 #a55194 #6b6ecf #e7969c #637939 #d6616b #3182bd #969696"
).split()

# Colormap anchors (evenly spaced), interpolated to 256 entries: perceptually ordered dark -> bright.
_ANCHORS = {
    "magma": "000004 1c1044 4f127b 812581 b5367a e55964 fb8761 fec287 fcfdbf",
    "viridis": "440154 472d7b 3b528b 2c728e 21918c 28ae80 5ec962 addc30 fde725",
    "gray": "000000 ffffff",
}


def colormap(name: str = "magma", n: int = 256) -> np.ndarray:
    """Lookup table of ``n`` RGB colours, uint8 ``(n, 3)``, linearly interpolated between anchors."""
    try:
        anchors = _ANCHORS[name].split()
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; choose one of {sorted(_ANCHORS)}") from None
    rgb = np.array([[int(a[i : i + 2], 16) for i in (0, 2, 4)] for a in anchors], float)  # (A, 3)
    pos = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], axis=1)  # (n, 3)
    return np.round(lut).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Spectrograms


def spectrogram_db(
    audio: np.ndarray,
    sample_rate: int,
    n_fft: int = N_FFT,
    hop: int = HOP,
    f_max: float | None = None,
    f_min: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrogram in dB (Hann-windowed STFT).

    Parameters
    ----------
    audio : np.ndarray, shape (n,) or (C, n)
        Raw audio; several channels are averaged.
    sample_rate : int
        Hz.
    n_fft, hop : int
        Frame length and hop in samples. Audio shorter than ``n_fft`` is zero-padded.
    f_max, f_min : float, optional
        Drop bins above / below these frequencies (Hz).

    Returns
    -------
    db : np.ndarray, float32, shape (F, T)
        Power in dB relative to 1.0, row 0 = lowest frequency.
    freqs : np.ndarray, shape (F,)
        Bin centre frequencies (Hz).
    times : np.ndarray, shape (T,)
        Frame centre times (s) from the start of ``audio``.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)  # (n,)
    if x.ndim != 1:
        raise ValueError(f"audio must be (n,) or (C, n), got shape {np.shape(audio)}")
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames]  # (T, n_fft)
    spec = np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)  # (T, n_fft//2+1)
    power = spec.real**2 + spec.imag**2
    db = 10.0 * np.log10(np.maximum(power, 1e-12)).T.astype(np.float32)  # (F, T)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    keep = np.ones(len(freqs), bool)
    if f_max is not None:
        keep &= freqs <= f_max
    if f_min is not None:
        keep &= freqs >= f_min
    if not keep.any():  # a band narrower than one bin: the nearest bin
        keep[np.argmin(np.abs(freqs - (f_min or 0.0)))] = True
    db, freqs = db[keep], freqs[keep]
    times = (np.arange(n_frames) * hop + n_fft / 2) / sample_rate
    return db, freqs, times


def spectrogram_image(
    audio: np.ndarray,
    sample_rate: int,
    size: tuple[int, int] = IMAGE_SIZE,
    cmap: str = "magma",
    top_db: float = TOP_DB,
    f_max: float | None = None,
    n_fft: int = N_FFT,
    hop: int = HOP,
    f_min: float | None = None,
) -> np.ndarray:
    """Render a spectrogram as an RGB image, low frequencies at the bottom.

    Parameters
    ----------
    size : (width, height)
        Output size in pixels.
    top_db : float
        Largest dynamic range drawn; see :func:`display_range`.

    Returns
    -------
    np.ndarray, uint8, shape (height, width, 3)
    """
    db, _, _ = spectrogram_db(audio, sample_rate, n_fft=n_fft, hop=hop, f_max=f_max, f_min=f_min)
    lo, hi = display_range(db, top_db)
    norm = np.clip((db - lo) / (hi - lo), 0.0, 1.0)  # (F, T) in [0, 1]
    idx = np.round(norm[::-1] * 255).astype(np.uint8)  # flip: high frequencies on top
    gray = Image.fromarray(idx).resize(size, Image.Resampling.BILINEAR)
    return colormap(cmap)[np.asarray(gray)]  # (H, W, 3)


def display_range(db: np.ndarray, top_db: float = TOP_DB) -> tuple[float, float]:
    """(low, high) dB mapped to the darkest and brightest colours.

    High is the loudest bin; low is the noise floor (the ``FLOOR_PERCENTILE``-th percentile of the
    bins), but never more than ``top_db`` below the peak, so calls stand out from a dark background
    instead of the whole image glowing with recorder noise.
    """
    hi = float(db.max())
    lo = max(float(np.percentile(db, FLOOR_PERCENTILE)), hi - top_db)
    return lo, max(hi, lo + 1.0)  # a silent image still gets a valid range


def spectrogram_png(audio: np.ndarray, sample_rate: int, **kwargs) -> bytes:
    """PNG bytes of :func:`spectrogram_image` (same keyword arguments)."""
    img = spectrogram_image(audio, sample_rate, **kwargs)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def axis_ticks(lo: float, hi: float, max_ticks: int = 5) -> np.ndarray:
    """Round tick values within [lo, hi]: steps of 1, 2 or 5 times a power of ten, at most
    ``max_ticks`` of them (at least the two ends when the range is tiny)."""
    span = float(hi) - float(lo)
    if not np.isfinite(span) or span <= 0:
        return np.array([float(lo)])
    for step in (m * 10.0**e for e in range(-3, 7) for m in (1, 2, 5)):
        ticks = np.arange(np.ceil(lo / step - 1e-9), np.floor(hi / step + 1e-9) + 1) * step
        if len(ticks) <= max_ticks:
            break
    return np.round(ticks, 6) + 0.0  # + 0.0: no "-0" label


def spectrogram_card_png(
    audio: np.ndarray,
    sample_rate: int,
    start_s: float = 0.0,
    band_hz: tuple[float, float] | None = None,
    size: tuple[int, int] = IMAGE_SIZE,
    cmap: str = "magma",
) -> bytes:
    """PNG of a window's spectrogram with a time axis (s from the file start) and a frequency
    axis (kHz), for the cards of the Search, Map, Clusters, Classify and Agile pages.

    Parameters
    ----------
    audio : np.ndarray, shape (n,) or (C, n)
    start_s : float
        Where ``audio`` starts in its recording (s): the time labels.
    band_hz : (low, high), optional
        Frequency range drawn (Hz); default 0 to Nyquist. Clipped to [0, Nyquist].
    size : (width, height)
        The spectrogram's own pixels; the axes add ``CARD_MARGIN`` around it.

    Returns
    -------
    bytes
        PNG of the spectrogram with margins: ``CARD_MARGIN`` left and below, a few pixels
        above and to the right.
    """
    nyquist = sample_rate / 2.0
    lo, hi = band_hz if band_hz is not None else (0.0, nyquist)
    lo, hi = max(0.0, float(lo)), min(nyquist, float(hi))
    if hi <= lo:
        raise ValueError(f"frequency range {lo:g}-{hi:g} Hz is empty (Nyquist {nyquist:g} Hz)")
    img = spectrogram_image(audio, sample_rate, size=size, cmap=cmap, f_max=hi, f_min=lo)
    left, bottom = CARD_MARGIN
    top = CARD_FONT_PX // 2 + 1  # room for the top frequency label
    canvas = Image.new("RGB", (size[0] + left + 4, top + size[1] + bottom), "white")
    canvas.paste(Image.fromarray(img), (left, top))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=CARD_FONT_PX)  # Pillow's own font: no files, no network
    duration = np.asarray(audio).shape[-1] / sample_rate
    y0 = top + size[1]  # the time axis
    for t in axis_ticks(start_s, start_s + duration):
        x = left + (t - start_s) / max(duration, 1e-9) * (size[0] - 1)
        draw.line([(x, y0), (x, y0 + 3)], fill="black")
        draw.text((x, y0 + 4), f"{t:g}", fill="black", font=font, anchor="ma")
    for f in axis_ticks(lo / 1000.0, hi / 1000.0, max_ticks=4):
        y = top + (1.0 - (f * 1000.0 - lo) / (hi - lo)) * (size[1] - 1)
        draw.line([(left - 4, y), (left - 1, y)], fill="black")
        draw.text((left - 5, y), f"{f:g}", fill="black", font=font, anchor="rm")
    draw.text((left + size[0], y0 + 4), "s", fill="black", font=font, anchor="ra")
    draw.text((2, y0 + 4), "kHz", fill="black", font=font, anchor="la")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def spectrogram_figure(
    audio: np.ndarray,
    sample_rate: int,
    offset_s: float = 0.0,
    f_max: float | None = None,
    span: tuple[float, float] | None = None,
    size: tuple[int, int] = (1200, 240),
    height: int = 260,
) -> go.Figure:
    """Interactive spectrogram of a recording for picking a time span with box selection.

    The spectrogram is drawn as an image (:func:`spectrogram_image`, ``size`` pixels, sent as a
    PNG: small and crisp however long the audio) placed on time (s, from ``offset_s``) and
    frequency (kHz) axes. An invisible row of points, one per 1/10 of a second, makes box
    selection report times, which :func:`selected_span` turns into ``(start_s, end_s)``.
    ``span`` is drawn as a shaded band.
    """
    x = np.asarray(audio, dtype=np.float32)
    duration = x.shape[-1] / sample_rate
    top_khz = (f_max or sample_rate / 2) / 1000.0
    n = x.shape[-1]
    hop = max(HOP, int(np.ceil(n / (2 * size[0]))))  # about 2 frames per output pixel
    png = spectrogram_png(x, sample_rate, size=size, f_max=f_max, hop=hop)
    fig = go.Figure()
    fig.add_layout_image(
        source="data:image/png;base64," + base64.b64encode(png).decode(),
        xref="x",
        yref="y",
        x=offset_s,
        y=top_khz,
        sizex=duration,
        sizey=top_khz,
        sizing="stretch",
        layer="below",
    )
    ticks = offset_s + np.arange(0.0, duration, 0.1)
    fig.add_trace(
        go.Scatter(
            x=ticks,
            y=np.full(len(ticks), top_khz / 2),
            mode="markers",
            marker={"size": 12, "opacity": 0.0},
            hovertemplate="%{x:.2f} s<extra></extra>",
            showlegend=False,
            name="time",
        )
    )
    if span is not None:
        fig.add_vrect(x0=span[0], x1=span[1], fillcolor="#22d3ee", opacity=0.3, line_width=1)
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin={"l": 40, "r": 10, "t": 10, "b": 30},
        xaxis={"title": "time (s)", "range": [offset_s, offset_s + duration], "showgrid": False},
        yaxis={"title": "kHz", "range": [0, top_khz], "showgrid": False},
        dragmode="select",
        selectdirection="h",
    )
    return fig


def selected_span(selection: dict | None) -> tuple[float, float] | None:
    """``(start_s, end_s)`` from a Streamlit plotly selection on :func:`spectrogram_figure`.

    Uses the box's x range when present, else the extent of the selected points; None if empty.
    """
    if not selection:
        return None
    for box in selection.get("box") or []:
        xs = box.get("x") or []
        if len(xs) >= 2 and max(xs) > min(xs):
            return float(min(xs)), float(max(xs))
    xs = [p["x"] for p in selection.get("points") or [] if "x" in p]
    if len(xs) >= 2 and max(xs) > min(xs):
        return float(min(xs)), float(max(xs))
    return None


# --------------------------------------------------------------------------------------------------
# Map


def _fold_categories(values: pd.Series, max_categories: int) -> pd.Series:
    """Keep the most frequent categories, the rest become "other"; missing becomes "(none)"."""
    s = values.astype("object").where(values.notna(), "(none)").astype(str)
    top = s.value_counts().index[:max_categories]
    return s.where(s.isin(top), "other")


def scatter_map(
    points: pd.DataFrame,
    color: str | None = None,
    continuous: bool | None = None,
    hover: tuple[str, ...] = (),
    max_categories: int = MAX_CATEGORIES,
    height: int = 600,
    title: str | None = None,
) -> go.Figure:
    """WebGL scatter of projected windows.

    Parameters
    ----------
    points : DataFrame
        Columns ``x``, ``y``, ``window_id``, optional ``start_s``, and whatever ``color`` /
        ``hover`` name.
    color : str, optional
        Column to colour by. Categorical columns (site, cluster, label) get one trace per value
        (legend toggles them); numeric ones (hour, score) one trace with a colour bar, cyclic for "hour".
    continuous : bool, optional
        Force numeric (True) or categorical (False) colouring; default: numeric unless the column is
        "cluster" or non-numeric.
    hover : tuple of str
        Columns joined into each point's hover text. Off by default: strings are not typed
        arrays and slow every map draw (benchmarks/app_bench.py); the table of selected windows
        shows their recordings.

    Every point carries numeric ``customdata = [window_id, start_s]`` so a selection maps back to
    windows with :func:`selected_window_ids`, whatever trace the point is in. Hover strings go in
    ``text``: numeric arrays travel to the browser as compact typed arrays, which keeps a 50 k-point
    map a few MB and quick to serialise.
    """
    for col in ("x", "y", "window_id"):
        if col not in points.columns:
            raise ValueError(f"scatter_map needs a {col!r} column; got {list(points.columns)}")
    hover = tuple(h for h in hover if h in points.columns and h != color)
    if color is not None and color not in points.columns:
        raise ValueError(f"no column {color!r} to colour by; got {list(points.columns)}")
    if continuous is None and color is not None:
        continuous = color != "cluster" and pd.api.types.is_numeric_dtype(points[color])
    template = _hovertemplate(color, continuous, hover)
    size = SPARSE_MARKER_SIZE if len(points) < SPARSE_POINTS else MAP_MARKER_SIZE
    fig = go.Figure()
    for df, name, marker in _colour_groups(points, color, continuous, max_categories):
        fig.add_trace(_map_trace(df, name, {"size": size, **marker}, hover, template))
    # No empty properties (title=None -> {}): they vanish when a cached figure is pickled, and a
    # spec that changes between reruns resets Streamlit's selection state.
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        dragmode="lasso",
        legend={"itemsizing": "constant", "title": {"text": color or ""}},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
    )
    if title:
        fig.update_layout(title=title)
    return fig


def _hovertemplate(color: str | None, continuous: bool | None, hover: tuple[str, ...]) -> str:
    template = "window %{customdata[0]:d} @ %{customdata[1]:.1f} s"
    if hover:
        template += "<br>%{text}"
    if color is not None:
        template += f"<br>{color}: " + ("%{marker.color:.2f}" if continuous else "%{fullData.name}")
    return template + "<extra></extra>"


def _colour_groups(points: pd.DataFrame, color, continuous, max_categories: int):
    """(rows, trace name, marker) per trace: one for no or numeric colouring, one per category."""
    if color is None:
        yield points, "windows", {"color": CATEGORICAL_COLOURS[0]}
    elif continuous:
        scale = "Twilight" if color == "hour" else "Viridis"
        marker = {"color": points[color].to_numpy(), "colorscale": scale, "showscale": True}
        marker["colorbar"] = {"title": {"text": color}}
        if color == "hour":
            marker.update(cmin=0, cmax=24)
        yield points, color, marker
    else:
        cats = _fold_categories(points[color], max_categories)
        order = sorted(cats.unique(), key=lambda c: (c in ("other", "(none)"), _natural_key(c)))
        for i, cat in enumerate(order):
            colour = "#c7c7c7" if cat in ("other", "(none)") else CATEGORICAL_COLOURS[i % 21]
            yield points[cats == cat], str(cat), {"color": colour}


def _map_trace(
    df: pd.DataFrame, name: str, marker: dict, hover: tuple[str, ...], hovertemplate: str
) -> go.Scattergl:
    start = df["start_s"].to_numpy(float) if "start_s" in df else np.zeros(len(df))
    text = None
    if hover:
        joined = df[hover[0]].astype(str)
        for h in hover[1:]:
            joined = joined + " · " + df[h].astype(str)
        text = joined.to_numpy()
    return go.Scattergl(
        x=df["x"].to_numpy(np.float32),
        y=df["y"].to_numpy(np.float32),
        mode="markers",
        name=name,
        customdata=np.column_stack([df["window_id"].to_numpy(float), start]),  # (n, 2)
        text=text,
        hovertemplate=hovertemplate,
        marker=marker,
    )


def _natural_key(value: str):
    """Sort "2" before "10" and numbers before words."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def selected_window_ids(selection: dict | None) -> list[int]:
    """Window ids of the points in a Streamlit plotly selection on :func:`scatter_map`."""
    if not selection:
        return []
    ids = []
    for p in selection.get("points") or []:
        custom = p.get("customdata")
        if custom is None:
            continue
        if isinstance(custom, dict):  # a typed-array row reaches Python as {"0": id, "1": t}
            custom = custom.get("0", custom.get(0))
        elif isinstance(custom, (list, tuple)):
            custom = custom[0]
        ids.append(int(round(float(custom))))
    return list(dict.fromkeys(ids))  # de-duplicated, selection order kept


# --------------------------------------------------------------------------------------------------
# Probes and clusters


def pr_curve(
    precision: np.ndarray,
    recall: np.ndarray,
    average_precision: float | None = None,
    operating_point: tuple[float, float] | None = None,
    label: str = "",
    height: int = 380,
) -> go.Figure:
    """Precision-recall curve (recall on x), optionally marking the operating point (recall, precision)."""
    p = np.asarray(precision, float)
    r = np.asarray(recall, float)
    if p.shape != r.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(
            f"precision and recall must be equal-length 1-D arrays, got {p.shape} {r.shape}"
        )
    name = "cross-validated" if average_precision is None else f"AP = {average_precision:.3f}"
    fig = go.Figure(go.Scatter(x=r, y=p, mode="lines", name=name, line={"shape": "hv", "width": 2}))
    if operating_point is not None:
        fig.add_trace(
            go.Scatter(
                x=[operating_point[0]],
                y=[operating_point[1]],
                mode="markers",
                name="threshold",
                marker={"size": 11, "symbol": "x", "color": "#d62728"},
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title=f"Precision-recall{': ' + label if label else ''}",
        xaxis={"title": "recall", "range": [0, 1.02]},
        yaxis={"title": "precision", "range": [0, 1.02]},
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"x": 0.02, "y": 0.05},
    )
    return fig


def cluster_counts(assignments: pd.DataFrame, by: str = "site", height: int = 420) -> go.Figure:
    """Heatmap of window counts per cluster (rows) and site or hour (columns).

    By hour, windows of recordings without a start time form an "undated" column after hour 23
    (they have no hour: folding them into hour 0, or dropping them, would misstate the day).

    Parameters
    ----------
    assignments : DataFrame
        Columns ``cluster`` and ``by`` (e.g. "site" or "hour"; hours are binned to integers).
    """
    if "cluster" not in assignments.columns or by not in assignments.columns:
        raise ValueError(f"cluster_counts needs 'cluster' and {by!r} columns")
    col = assignments[by]
    missing = "(none)"
    if by == "hour":
        col = np.floor(col.astype(float)).astype("Int64")
        missing = UNDATED
    table = pd.crosstab(assignments["cluster"], col.astype("object").fillna(missing))
    if by == "hour":  # hours in order, then the windows of undated recordings as their own bucket
        cols = [c for c in range(24) if c in table.columns]
        table = table.reindex(columns=cols + ([UNDATED] if UNDATED in table.columns else []))
    fig = go.Figure(
        go.Heatmap(
            z=table.to_numpy(),
            x=[str(c) for c in table.columns],
            y=[str(c) for c in table.index],
            colorscale="Viridis",
            colorbar={"title": {"text": "windows"}},
            hovertemplate=f"cluster %{{y}}<br>{by} %{{x}}<br>%{{z}} windows<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        xaxis={"title": by, "type": "category"},
        yaxis={"title": "cluster", "type": "category", "autorange": "reversed"},
        margin={"l": 50, "r": 10, "t": 20, "b": 40},
    )
    return fig


def score_histogram(
    scores: np.ndarray, threshold: float | None = None, height: int = 260
) -> go.Figure:
    """Histogram of probe scores over the archive with the threshold as a vertical line.

    Binned here (50 bins over [0, 1]): the browser gets 50 bars, not a million scores per rerun.
    """
    counts, edges = np.histogram(np.asarray(scores, float), bins=SCORE_BINS, range=(0.0, 1.0))
    centres = 0.5 * (edges[:-1] + edges[1:])
    fig = go.Figure(go.Bar(x=centres, y=counts, width=edges[1] - edges[0], name="windows"))
    if threshold is not None:
        fig.add_vline(x=threshold, line_color="#d62728", line_dash="dash")
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        xaxis_title="score",
        yaxis_title="windows",
        yaxis_type="log",
        margin={"l": 50, "r": 10, "t": 10, "b": 40},
    )
    return fig


def agile_rounds(rounds: pd.DataFrame, height: int = 300) -> go.Figure:
    """Cross-validated average precision per round of the agile loop (with its bootstrap
    interval where there is one) over bars of the labels it was trained on.

    Parameters
    ----------
    rounds : pandas.DataFrame
        One row per round: number, positive, negative, average_precision (NaN/None when CV was
        impossible), ap_low, ap_high (None without an interval).
    """
    x = rounds["number"].astype(int).to_numpy()
    ap = pd.to_numeric(rounds["average_precision"], errors="coerce").to_numpy(float)
    low = pd.to_numeric(rounds["ap_low"], errors="coerce").to_numpy(float)
    high = pd.to_numeric(rounds["ap_high"], errors="coerce").to_numpy(float)
    fig = go.Figure()
    for kind, colour in (("positive", "#2ca02c"), ("negative", "#d62728")):
        fig.add_trace(
            go.Bar(x=x, y=rounds[kind], name=f"{kind} labels", marker_color=colour, opacity=0.35)
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=ap,
            mode="lines+markers",
            name="CV average precision",
            line={"color": "#1f77b4", "width": 3},
            marker={"size": 10},
            yaxis="y2",  # the overlaying axis is drawn above the bars
            error_y={
                "type": "data",
                "symmetric": False,
                "array": np.nan_to_num(high - ap),
                "arrayminus": np.nan_to_num(ap - low),
            },
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        barmode="stack",
        margin={"l": 50, "r": 50, "t": 10, "b": 40},
        xaxis={"title": "round", "tickmode": "array", "tickvals": x},
        yaxis={"title": "labels", "side": "right", "showgrid": False},
        yaxis2={
            "title": "average precision (CV)",
            "range": [0, 1.05],
            "overlaying": "y",
            "side": "left",
        },
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
