"""``chorus explore``: the warning when the explorer listens beyond this machine."""

from __future__ import annotations

import pytest

import index
from explorer.cli import main
from explorer.commands import explore


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts_need_no_warning(host):
    assert explore.host_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "myhost.lan"])
def test_other_hosts_are_warned_of_the_missing_authentication(host):
    assert "no authentication" in explore.host_warning(host)


def test_explore_prints_one_warning_line_before_starting(tmp_path, monkeypatch, capsys):
    index.connect(tmp_path / "db.chorus")
    started = []
    monkeypatch.setattr(explore.os, "execv", lambda exe, cmd: started.append(cmd))
    monkeypatch.setattr(explore.subprocess, "call", lambda cmd: 0)
    assert main(["explore", "--db", str(tmp_path / "db.chorus"), "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chorus explore: warning: --host 0.0.0.0")
    assert started and "0.0.0.0" in started[0]
    assert main(["explore", "--db", str(tmp_path / "db.chorus")]) == 0
    assert capsys.readouterr().err == ""
