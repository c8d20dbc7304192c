"""Building and caching of the compiled helpers (embedder.native), independent of what they do."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedder import flac, native

SOURCE = 'extern "C" int answer() { return 42; }\n'


def has_compiler() -> bool:
    try:
        native.compiler()
        return True
    except native.KernelUnavailable:
        return False


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A throwaway library definition with its own source and cache."""
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    src = tmp_path / "answer.cpp"
    src.write_text(SOURCE)

    def bind(lib):
        lib.answer.restype = ctypes.c_int
        return lib.answer

    made = []

    def make(**kw):
        lib = native.NativeLibrary(f"answer_{len(made)}", src, bind=bind, **kw)
        made.append(lib)
        return lib

    yield make
    for lib in made:
        native.LIBRARIES.pop(lib.name, None)


def test_builds_loads_and_reuses(tiny):
    if not has_compiler():
        pytest.skip("no C++ compiler")
    lib = tiny()
    assert lib.get()() == 42 and lib.status().startswith("on (")
    path = lib.library_path()
    stamp = path.stat().st_mtime_ns
    lib.reset()
    assert lib.get()() == 42 and path.stat().st_mtime_ns == stamp  # loaded, not rebuilt


def test_flags_are_part_of_the_cache_key(tiny):
    if not has_compiler():
        pytest.skip("no C++ compiler")
    plain, tuned = tiny(), tiny(flags=lambda: ("-DTUNED=1",))
    assert plain.library_path() != tuned.library_path()
    assert plain.get()() == tuned.get()() == 42


def test_own_switch_and_cpu_problem_turn_it_off(tiny, monkeypatch):
    lib = tiny(switch="CHORUS_TEST_ANSWER")
    monkeypatch.setenv("CHORUS_TEST_ANSWER", "0")
    assert lib.get() is None and lib.status() == "off (CHORUS_TEST_ANSWER=0)"
    monkeypatch.delenv("CHORUS_TEST_ANSWER")
    lib.reset()
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert lib.status() == f"off ({native.DISABLE_ENV}=0)"
    monkeypatch.delenv(native.DISABLE_ENV)
    odd = tiny(problem=lambda: "the CPU is a potato")
    assert not odd.available() and odd.status() == "off (the CPU is a potato)"


def test_command_line_reports_every_library():
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-m", "embedder.native"], capture_output=True, text=True, env=env
    )
    lines = done.stdout.strip().splitlines()
    names = {line.split(":")[0] for line in lines}
    assert names == {"flac_decode"}
    assert all(": on (" in line or ": off (" in line for line in lines)
    assert done.returncode == (0 if flac.available() else 1)


def test_sources_ship_with_the_package():
    here = Path(native.__file__).parent
    lib = flac.LIBRARY
    assert lib.source.parent == here and lib.source.is_file()
