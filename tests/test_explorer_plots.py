"""Plot and spectrogram builders: figures and images users look at, checked without Streamlit."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from explorer import plots

SR = 22050  # Hz


def _tone(freq_hz: float, dur_s: float = 2.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(sr * dur_s)) / sr
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_colormap_is_ordered_dark_to_bright():
    lut = plots.colormap("magma")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    luminance = lut @ np.array([0.299, 0.587, 0.114])
    assert luminance[0] < 5 and luminance[-1] > 230
    assert np.all(np.diff(luminance) > -3)  # monotone up to rounding
    with pytest.raises(ValueError, match="unknown colormap"):
        plots.colormap("jet")


def test_spectrogram_db_peak_at_tone_frequency():
    db, freqs, times = plots.spectrogram_db(_tone(3000.0), SR)
    assert db.shape == (plots.N_FFT // 2 + 1, len(times))
    peak_hz = freqs[db.mean(axis=1).argmax()]
    assert abs(peak_hz - 3000.0) <= SR / plots.N_FFT
    assert times[0] == pytest.approx(plots.N_FFT / 2 / SR)
    assert times[-1] < 2.0


def test_spectrogram_db_stereo_short_and_fmax():
    stereo = np.stack([_tone(1000.0, 0.01), _tone(1000.0, 0.01)])  # (2, 220) shorter than N_FFT
    db, freqs, times = plots.spectrogram_db(stereo, SR, f_max=5000.0)
    assert len(times) == 1 and freqs.max() <= 5000.0 and db.shape == (len(freqs), 1)
    with pytest.raises(ValueError, match="audio must be"):
        plots.spectrogram_db(np.zeros((2, 2, 2)), SR)


def test_spectrogram_image_puts_high_tone_near_top_and_low_tone_near_bottom():
    high = plots.spectrogram_image(_tone(9000.0), SR, size=(100, 64))
    low = plots.spectrogram_image(_tone(500.0), SR, size=(100, 64))
    assert high.shape == (64, 100, 3) and high.dtype == np.uint8
    bright_row_high = high.sum(axis=(1, 2)).argmax()
    bright_row_low = low.sum(axis=(1, 2)).argmax()
    assert bright_row_high < 20 < 50 < bright_row_low  # row 0 is the top (highest frequency)


def test_spectrogram_png_decodes_to_requested_size():
    png = plots.spectrogram_png(_tone(2000.0), SR, size=(200, 80), cmap="viridis")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.size == (200, 80) and img.mode == "RGB"


def test_noise_floor_is_dark_and_calls_bright():
    rng = np.random.default_rng(0)
    x = 0.05 * rng.standard_normal(2 * SR).astype(np.float32)
    x[SR // 2 : SR] += _tone(4000.0, 0.5)
    img = plots.spectrogram_image(x, SR, size=(200, 100))
    luminance = img @ np.array([0.299, 0.587, 0.114])  # (H, W)
    assert np.median(luminance) < 40  # background noise drawn near black
    assert luminance[:, 55:95].max() > 150  # the tone (0.5-1 s of 2 s) drawn bright
    lo, hi = plots.display_range(np.full((4, 4), -50.0))
    assert hi > lo  # flat input still gives a usable range


def test_silence_renders_without_nan():
    img = plots.spectrogram_image(np.zeros(SR, np.float32), SR)
    assert np.isfinite(img).all()


def test_spectrogram_figure_and_span_selection():
    fig = plots.spectrogram_figure(_tone(2000.0, 4.0), SR, offset_s=10.0, span=(11.0, 12.0))
    (image,) = fig.layout.images
    assert image.source.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(image.source.split(",", 1)[1])))
    assert png.size == (1200, 240)
    assert (image.x, image.sizex) == (10.0, pytest.approx(4.0))
    assert image.sizey == pytest.approx(SR / 2000.0)  # kHz up to Nyquist
    (pts,) = fig.data
    assert pts.x[0] == 10.0 and pts.x[-1] == pytest.approx(13.9)  # 0.1 s selection grid
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == 11.0
    assert plots.selected_span({"box": [{"x": [12.5, 11.0]}], "points": []}) == (11.0, 12.5)
    assert plots.selected_span({"box": [], "points": [{"x": 3.0}, {"x": 1.0}]}) == (1.0, 3.0)
    assert plots.selected_span({"box": [], "points": []}) is None
    assert plots.selected_span(None) is None


def _points(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "window_id": np.arange(n) + 1000,
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "site": rng.choice(["A", "B", "C"], n),
            "hour": rng.uniform(0, 24, n),
            "cluster": rng.integers(0, 12, n),
            "path": [f"rec{i % 7}.wav" for i in range(n)],
            "start_s": np.arange(n) * 5.0,
        }
    )


def test_scatter_map_categorical_one_webgl_trace_per_site():
    pts = _points()
    fig = plots.scatter_map(pts, color="site")
    assert [t.name for t in fig.data] == ["A", "B", "C"]
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert sum(len(t.x) for t in fig.data) == len(pts)
    ids = np.concatenate([t.customdata[:, 0].astype(int) for t in fig.data])
    assert sorted(ids) == list(pts["window_id"])
    first = fig.data[0]
    i = int(np.flatnonzero(pts["window_id"] == int(first.customdata[0, 0]))[0])
    assert first.customdata[0, 1] == pts["start_s"][i] and first.text is None
    with_text = plots.scatter_map(pts, color="site", hover=("site", "path")).data[0]
    assert with_text.text[0] == pts["path"][i]  # site is the trace name, so only the path shows


def test_scatter_map_cluster_is_categorical_and_natural_sorted():
    fig = plots.scatter_map(_points(), color="cluster")
    assert [t.name for t in fig.data] == [str(i) for i in range(12)]


def test_scatter_map_folds_rare_categories():
    pts = _points()
    fig = plots.scatter_map(pts, color="cluster", max_categories=3)
    names = [t.name for t in fig.data]
    assert len(names) == 4 and names[-1] == "other"
    assert sum(len(t.x) for t in fig.data) == len(pts)


def test_scatter_map_continuous_hour_is_cyclic_with_colourbar():
    fig = plots.scatter_map(_points(), color="hour")
    (trace,) = fig.data
    assert trace.marker.showscale and trace.marker.cmin == 0 and trace.marker.cmax == 24
    assert len(trace.marker.color) == 300


def test_scatter_map_missing_labels_and_bad_columns():
    pts = _points(10)
    pts["label"] = [None] * 8 + ["owl", "owl"]
    fig = plots.scatter_map(pts, color="label")
    assert [t.name for t in fig.data] == ["owl", "(none)"]
    with pytest.raises(ValueError, match="no column 'score'"):
        plots.scatter_map(pts, color="score")
    with pytest.raises(ValueError, match="needs a 'x' column"):
        plots.scatter_map(pts.drop(columns="x"))


def test_selected_window_ids_maps_points_back_through_customdata():
    sel = {
        "points": [
            {"curve_number": 1, "point_index": 0, "customdata": [1005, "A"]},
            {"curve_number": 0, "point_index": 3, "customdata": [1002, "B"]},
            {"curve_number": 0, "point_index": 3, "customdata": [1002, "B"]},
            {"curve_number": 0, "point_index": 4},
            {"curve_number": 2, "point_index": 0, "customdata": {"0": 1007.0, "1": 35.0}},
        ]
    }
    assert plots.selected_window_ids(sel) == [1005, 1002, 1007]
    assert plots.selected_window_ids(None) == []


def test_pr_curve_with_operating_point():
    fig = plots.pr_curve(
        [1.0, 0.8, 0.5], [0.0, 0.5, 1.0], average_precision=0.77, operating_point=(0.5, 0.8)
    )
    assert fig.data[0].name == "AP = 0.770" and list(fig.data[0].x) == [0.0, 0.5, 1.0]
    assert fig.data[1].x == (0.5,) and fig.data[1].y == (0.8,)
    with pytest.raises(ValueError, match="equal-length"):
        plots.pr_curve([1.0, 0.5], [0.2])


def test_cluster_counts_by_site_and_hour():
    pts = _points()
    fig = plots.cluster_counts(pts, by="site")
    (heat,) = fig.data
    assert list(heat.x) == ["A", "B", "C"]
    assert np.asarray(heat.z).sum() == len(pts)
    by_hour = plots.cluster_counts(pts, by="hour").data[0]
    assert [int(h) for h in by_hour.x] == sorted(int(h) for h in by_hour.x)
    assert np.asarray(by_hour.z).sum() == len(pts)
    with pytest.raises(ValueError, match="needs 'cluster'"):
        plots.cluster_counts(pts.drop(columns="cluster"))


def test_cluster_counts_by_hour_keeps_undated_windows_in_their_own_bucket():
    # one dated recording among undated ones once drew a lone hour column and lost the rest
    a = pd.DataFrame({"cluster": [0, 0, 1, 1, 1], "hour": [5.0, np.nan, np.nan, 23.0, np.nan]})
    (heat,) = plots.cluster_counts(a, by="hour").data
    assert list(heat.x) == ["5", "23", "undated"]
    assert np.asarray(heat.z).tolist() == [[1, 0, 1], [0, 1, 2]]


def test_score_histogram_marks_threshold():
    fig = plots.score_histogram(np.linspace(0, 1, 100), threshold=0.7)
    assert fig.layout.shapes[0].x0 == 0.7
    assert len(fig.data[0].x) == plots.SCORE_BINS and sum(fig.data[0].y) == 100  # binned here


def test_axis_ticks_are_round_and_inside_the_range():
    assert plots.axis_ticks(12.5, 17.5).tolist() == [13, 14, 15, 16, 17]
    assert plots.axis_ticks(0, 8).tolist() == [0, 2, 4, 6, 8]
    assert plots.axis_ticks(0.5, 4.0, max_ticks=4).tolist() == [1, 2, 3, 4]
    assert plots.axis_ticks(3.0, 3.0).tolist() == [3.0]


def test_card_spectrogram_has_axes_and_draws_only_the_chosen_band():
    sr = 16000
    t = np.arange(2 * sr) / sr
    tone = np.sin(2 * np.pi * 1000.0 * t)  # 1 kHz
    size = (200, 80)
    left = plots.CARD_MARGIN[0]

    def image(band):
        png = plots.spectrogram_card_png(tone, sr, 10.0, band, size)
        return np.asarray(Image.open(io.BytesIO(png)).convert("L"), float)

    def tone_height(img) -> float:
        """Where the brightest row of the spectrogram lies: 0 at the bottom, 1 at the top."""
        top = img.shape[0] - size[1] - plots.CARD_MARGIN[1]
        spec = img[top : top + size[1], left : left + size[0]]
        return 1.0 - spec.mean(axis=1).argmax() / (size[1] - 1)

    full = image(None)
    assert full.shape[0] > size[1] and full.shape[1] > size[0]  # margins for the axes
    assert (full[:, : left - 6] < 128).any()  # kHz labels left of the spectrogram
    assert (full[-plots.CARD_MARGIN[1] + 4 :, left:] < 128).any()  # time labels below it
    assert tone_height(full) == pytest.approx(1000 / 8000, abs=0.05)
    assert tone_height(image((500.0, 1500.0))) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="empty"):
        plots.spectrogram_card_png(tone, sr, 0.0, (9000.0, 12000.0), size)


def test_agile_rounds_figure_has_ap_with_intervals_and_label_bars():
    rounds = pd.DataFrame(
        {
            "number": [1, 2],
            "positive": [3, 6],
            "negative": [5, 9],
            "average_precision": [0.6, None],
            "ap_low": [0.4, None],
            "ap_high": [0.8, None],
        }
    )
    fig = plots.agile_rounds(rounds)
    kinds = [t.type for t in fig.data]
    assert kinds == ["bar", "bar", "scatter"]
    ap = fig.data[2]
    assert ap.y[0] == pytest.approx(0.6) and np.isnan(ap.y[1])
    assert ap.error_y.array[0] == pytest.approx(0.2) and ap.error_y.arrayminus[0] == pytest.approx(
        0.2
    )
    assert list(fig.data[0].y) == [3, 6]
