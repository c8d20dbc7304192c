"""Reading sites and start times from recorder file names; discovering audio by content."""

from datetime import datetime

import numpy as np
import pytest

from explorer.recordings import discover, parse_site, parse_start_time, recording_start


@pytest.mark.parametrize(
    "name, expected",
    [
        ("20240610_043000.WAV", datetime(2024, 6, 10, 4, 30, 0)),  # AudioMoth
        ("SMM01234_20240610_043015.wav", datetime(2024, 6, 10, 4, 30, 15)),  # Song Meter
        ("S4A09876_20231231_235959_000.flac", datetime(2023, 12, 31, 23, 59, 59)),
        ("site3_2024-06-10T04-30-00.wav", datetime(2024, 6, 10, 4, 30, 0)),
        ("2024-06-10 04:30:00.mp3", datetime(2024, 6, 10, 4, 30, 0)),
        ("rec_20240610T043000.ogg", datetime(2024, 6, 10, 4, 30, 0)),
        ("12345678_999999.wav", None),  # digits that are no date
        ("dawn_chorus.wav", None),
    ],
)
def test_parse_start_time(name, expected):
    assert parse_start_time(name) == expected


def test_parse_site_rules():
    assert parse_site("north/2024/a.wav") == "north"
    assert parse_site("a.wav") is None
    assert parse_site("north/2024/a.wav", "dir:-1") == "2024"
    assert parse_site("north/2024/a.wav", "dir:1") == "2024"
    assert parse_site("x/SITE07_20240610_043000.wav", r"(?P<site>SITE\d+)_") == "SITE07"
    assert parse_site("x/y.wav", r"(?P<site>SITE\d+)_") is None
    with pytest.raises(ValueError, match="named group"):
        parse_site("x/y.wav", r"y")
    with pytest.raises(ValueError, match="bad site regex"):
        parse_site("x/y.wav", r"(")


def test_discover_by_extension_and_content(tmp_path, write_audio):
    sig = 0.1 * np.sin(np.arange(8000) / 5)
    write_audio(tmp_path / "a" / "one.wav", sig, 8000)
    write_audio(tmp_path / "a" / "two.flac", sig, 8000, format="FLAC")
    write_audio(tmp_path / "b" / "noext", sig, 8000, format="WAV")  # audio without an extension
    (tmp_path / "b" / "notes.txt").write_text("field notes")
    (tmp_path / "b" / "blob.bin").write_bytes(b"\x00" * 100)
    write_audio(tmp_path / ".hidden" / "x.wav", sig, 8000)
    found = [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path)]
    assert found == ["a/one.wav", "a/two.flac", "b/noext"]


def test_start_time_from_metadata_when_the_name_has_none(tmp_path):
    import soundfile as sf

    def tagged(name, **tags):
        with sf.SoundFile(tmp_path / name, "w", 8000, 1) as f:
            for key, value in tags.items():
                setattr(f, key, value)
            f.write(np.zeros(800))
        return tmp_path / name

    moth = tagged("a.wav", comment="Recorded at 04:30:15 10/06/2024 (UTC) by AudioMoth 24A7")
    assert recording_start(moth) == datetime(2024, 6, 10, 4, 30, 15)
    iso = tagged("b.wav", date="2023-05-01T21:00:00")
    assert recording_start(iso) == datetime(2023, 5, 1, 21, 0, 0)
    named = tagged("20220101_000000.wav", date="2023-05-01T21:00:00")
    assert recording_start(named) == datetime(2022, 1, 1)  # the name wins
    assert recording_start(tagged("c.wav", comment="no date here")) is None
    (tmp_path / "junk.wav").write_bytes(b"junk")
    assert recording_start(tmp_path / "junk.wav") is None
