"""Ingest: resumable, crash-safe, tolerant of bad files, re-embeds changed files."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import index
from explorer.ingest import IngestError, default_workers, embed_archive

SR = 16000


def _make_archive(root, n_files=4, seconds=12.0, write=None):
    rng = np.random.default_rng(0)
    for i in range(n_files):
        t = np.arange(int(seconds * SR)) / SR
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (500 + 300 * i) * t)
        site = "A" if i % 2 == 0 else "B"
        path = root / site / f"{site}_2024061{i}_050000.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), SR)
    return root


def _windows(db_path, model="spectral"):
    db = index.connect(db_path)
    rows = db.windows(model).to_pandas()
    recs = db.recordings().set_index("recording_id")
    rows["path"] = recs.loc[rows.recording_id, "path"].to_numpy()
    return rows.sort_values(["path", "channel", "start_s"]).reset_index(drop=True)


def test_embed_then_rerun_is_a_no_op(tmp_path):
    archive = _make_archive(tmp_path / "archive")
    s1 = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s1.n_found, s1.n_embedded, s1.n_failed) == (4, 4, 0)
    # 12 s at 5 s windows: starts 0, 5 and a 2 s tail window at 10 s
    assert s1.n_windows == 12
    w1 = _windows(tmp_path / "db.chorus")
    assert w1.groupby("path").size().tolist() == [3, 3, 3, 3]
    assert w1.start_s.tolist()[:3] == [0.0, 5.0, 10.0]
    assert w1.end_s.tolist()[:3] == [5.0, 10.0, 12.0]
    s2 = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s2.n_embedded, s2.n_skipped, s2.n_windows) == (0, 4, 0)
    w2 = _windows(tmp_path / "db.chorus")
    assert w2.window_id.tolist() == w1.window_id.tolist()
    recs = index.connect(tmp_path / "db.chorus").recordings()
    assert sorted(recs.site) == ["A", "A", "B", "B"]
    assert recs.start_time.notna().all()


def test_changed_file_is_re_embedded_and_old_windows_removed(tmp_path):
    archive = _make_archive(tmp_path / "archive")
    embed_archive(archive, tmp_path / "db.chorus", progress=False)
    target = sorted(archive.rglob("*.wav"))[0]
    noise = 0.05 * np.random.default_rng(5).standard_normal(int(20.5 * SR))
    sf.write(target, noise.astype(np.float32), SR)  # now 4 full windows + 0.5 s tail
    os.utime(target, (time.time() + 10, time.time() + 10))
    begun = []
    real = index.Database.begin_recording
    with pytest.MonkeyPatch.context() as m:
        m.setattr(index.Database, "begin_recording", lambda db, *a: begun.append(a) or real(db, *a))
        s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_embedded, s.n_skipped) == (1, 3)
    assert len(begun) == 1  # its old windows are dropped once (each drop is a commit)
    w = _windows(tmp_path / "db.chorus")
    rel = target.relative_to(archive).as_posix()
    # the 0.5 s tail is shorter than MIN_TAIL_S: dropped
    assert w[w.path == rel].start_s.tolist() == [0.0, 5.0, 10.0, 15.0]
    assert len(w) == 4 + 9
    assert not w.duplicated(["path", "channel", "start_s"]).any()


def test_a_run_stopped_before_its_status_commit_is_settled_by_the_rerun(tmp_path, monkeypatch):
    archive = _make_archive(tmp_path / "archive", n_files=2)
    real = index.Database.set_status

    def stop(db, ids, status):
        if status == "ok" and len(ids):
            raise KeyboardInterrupt  # killed after the done markers, before the status commit
        return real(db, ids, status)

    monkeypatch.setattr(index.Database, "set_status", stop)
    with pytest.raises(KeyboardInterrupt):
        embed_archive(archive, tmp_path / "db.chorus", progress=False)
    monkeypatch.undo()
    assert set(index.connect(tmp_path / "db.chorus").recordings()["status"]) == {"pending"}
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_embedded, s.n_skipped) == (0, 2)
    assert set(index.connect(tmp_path / "db.chorus").recordings()["status"]) == {"ok"}


def test_file_turned_corrupt_loses_its_old_windows(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=2)
    embed_archive(archive, tmp_path / "db.chorus", progress=False)
    target = sorted(archive.rglob("*.wav"))[0]
    target.write_bytes(b"this is not audio" * 100)
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_failed, s.n_skipped) == (1, 1)
    rel = target.relative_to(archive).as_posix()
    assert rel not in set(_windows(tmp_path / "db.chorus").path)  # search cannot return them
    db = index.connect(tmp_path / "db.chorus")
    assert len(db.done_recordings("spectral")) == 1


def test_a_file_name_that_is_not_utf8_is_reported_and_the_rest_embedded(tmp_path):
    import explorer.plan

    archive = _make_archive(tmp_path / "archive", n_files=2)
    src = sorted(archive.rglob("*.wav"))[0]
    try:
        (archive / os.fsdecode(b"bad_\xff.wav")).write_bytes(src.read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses such names")
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_embedded, s.n_failed) == (2, 1)
    assert s.failed == [("bad_\\xff.wav", explorer.plan.NOT_UTF8)]
    # stored as failed under its escaped name (shown by chorus info and the Archive page)
    recs = index.connect(tmp_path / "db.chorus").recordings().set_index("path")
    assert recs.loc["bad_\\xff.wav", "status"] == "failed"
    assert "not valid UTF-8" in recs.loc["bad_\\xff.wav", "error"]
    again = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (again.n_skipped, again.n_failed, len(again.failed)) == (2, 1, 1)
    assert len(index.connect(tmp_path / "db.chorus").recordings()) == 3


def test_bad_files_are_recorded_and_skipped(tmp_path, write_audio):
    archive = _make_archive(tmp_path / "archive", n_files=2)
    bad = archive / "bad"
    bad.mkdir()
    (bad / "zero.wav").write_bytes(b"")
    good = write_audio(tmp_path / "tmp.wav", 0.1 * np.ones(SR), SR)
    (bad / "truncated.wav").write_bytes(good.read_bytes()[:30])
    (bad / "garbage.wav").write_bytes(os.urandom(5000))
    nan = np.full(SR * 2, 0.1, np.float32)
    nan[SR] = np.nan
    write_audio(bad / "nan.wav", nan, SR, subtype="FLOAT")
    huge = np.full(SR * 2, 0.1, np.float32)
    huge[SR // 2] = 1e20  # finite, but embedded it was a zero vector, silently
    write_audio(bad / "huge.wav", huge, SR, subtype="FLOAT")
    write_audio(bad / "blip.wav", 0.1 * np.ones(SR // 1000), SR)  # 1 ms
    surround = 0.1 * np.random.default_rng(1).standard_normal((96000 * 6, 6))
    write_audio(archive / "C" / "surround.wav", surround, 96000)  # 6 s, 6 channels, 96 kHz: fine
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert s.n_failed == 6 and s.n_embedded == 3
    failed = {p.split("/")[-1]: e for p, e in s.failed}
    names = {"zero.wav", "truncated.wav", "garbage.wav", "nan.wav", "blip.wav", "huge.wav"}
    assert set(failed) == names
    assert "nan" in failed["nan.wav"].lower()
    assert "a sample beyond" in failed["huge.wav"] and "0.500 s" in failed["huge.wav"]
    recs = index.connect(tmp_path / "db.chorus").recordings()
    assert (recs.status == "failed").sum() == 6
    assert recs[recs.status == "failed"].error.str.len().min() > 0
    w = _windows(tmp_path / "db.chorus")
    assert set(w.path) == {"A/A_20240610_050000.wav", "B/B_20240611_050000.wav", "C/surround.wav"}
    assert "failed" in s.line()
    # failed files are not retried unless asked; then they fail again the same way
    s2 = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s2.n_embedded, s2.n_skipped, s2.n_failed) == (0, 3, 6)
    s3 = embed_archive(archive, tmp_path / "db.chorus", progress=False, retry_failed=True)
    assert (s3.n_embedded, s3.n_failed) == (0, 6)
    assert len(_windows(tmp_path / "db.chorus")) == len(w)


def test_usage_errors(tmp_path):
    with pytest.raises(IngestError, match="not found"):
        embed_archive(tmp_path / "nope", tmp_path / "db.chorus", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no audio files"):
        embed_archive(tmp_path / "empty", tmp_path / "db.chorus", progress=False)
    archive = _make_archive(tmp_path / "archive", n_files=1)
    embed_archive(archive, tmp_path / "db.chorus", progress=False)
    with pytest.raises(IngestError, match="--hop must be a positive"):
        embed_archive(archive, tmp_path / "db.chorus", hop_s=-2.5, progress=False)


def test_channels_all_and_workers(tmp_path, write_audio):
    rng = np.random.default_rng(2)
    for i in range(3):
        write_audio(
            tmp_path / "a" / f"st{i}.flac",
            0.1 * rng.standard_normal((SR * 6, 2)),
            SR,
            format="FLAC",
        )
    s = embed_archive(
        tmp_path / "a",
        tmp_path / "db.chorus",
        channels="all",
        workers=2,
        batch_size=3,
        progress=False,
    )
    assert s.n_embedded == 3
    w = _windows(tmp_path / "db.chorus")
    assert sorted(set(w.channel)) == [0, 1]
    assert len(w) == 3 * 2 * 2  # 3 files x 2 channels x (one 5 s window + 1 s tail)


def test_decode_workers_store_the_same_vectors_as_in_process(tmp_path):
    # through worker processes and their reused shared memory, the same windows and vectors
    archive = _make_archive(tmp_path / "archive", n_files=6, seconds=31.0)
    by_path = {}
    for workers in (0, 2):
        db_path = tmp_path / f"db{workers}.chorus"
        embed_archive(archive, db_path, workers=workers, batch_size=2, hop_s=2.5, progress=False)
        w = _windows(db_path)
        ids, vectors = index.connect(db_path).vectors("spectral")
        by_id = dict(zip(ids.tolist(), vectors, strict=True))
        by_path[workers] = (w[["path", "start_s"]], np.stack([by_id[i] for i in w.window_id]))
    (where0, v0), (where2, v2) = by_path[0], by_path[2]
    assert len(where0) == 6 * 12 and where0.equals(where2)
    np.testing.assert_allclose(v2, v0, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_exactly_the_expected_windows(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=24, seconds=20.0)

    def command(db: Path) -> list[str]:
        return [sys.executable, "-m", "explorer.cli", "embed", str(archive), "--db", str(db),
                "--hop", "1", "--no-progress", "--chunk-windows", "16", "--batch-size", "8"]  # fmt: skip

    # Every run, the reference included, embeds with one thread: float32 sums reordered by
    # another thread count differ in the last bits (1.85e-6 seen), which is not what this checks.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = tmp_path / "ref.chorus"
    subprocess.run(command(reference), env=env, check=True, capture_output=True)
    expected = _windows(reference)

    db_path = tmp_path / "db.chorus"
    proc = subprocess.Popen(
        command(db_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            n = index.connect(db_path).windows("spectral").count_rows()
        except Exception:  # table not created yet
            continue
        if n >= 48:
            proc.send_signal(signal.SIGKILL)
            killed_at = n
            break
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "run ended before the kill"
    assert killed_at < len(expected)
    # the status column tells which recordings are embedded: "ok" only with all windows in
    killed = index.connect(db_path)
    status = killed.recordings().set_index("recording_id")["status"]
    done = set(killed.done_recordings("spectral")["recording_id"])
    # (ok implies done; a kill between a chunk's done markers and its status commit leaves a
    # done file pending, which the rerun settles)
    assert set(status[status == "ok"].index) <= done and (status == "pending").any()

    rerun = subprocess.run(command(db_path), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    done = re.search(r"embedded (\d+) recordings .*; (\d+) already done", rerun.stdout)
    assert done and int(done[1]) + int(done[2]) == 24, rerun.stdout
    assert (index.connect(db_path).recordings()["status"] == "ok").all()
    got = _windows(db_path)
    assert len(got) == len(expected)
    assert not got.duplicated(["path", "channel", "start_s"]).any()
    keys = ["path", "channel", "start_s", "end_s"]
    assert got[keys].equals(expected[keys])
    np.testing.assert_allclose(np.stack(got.vector), np.stack(expected.vector), atol=1e-6)
    assert not got.window_id.duplicated().any()


def test_silent_recording_is_embedded_without_breaking_search(tmp_path, write_audio):
    archive = _make_archive(tmp_path / "archive", n_files=2)
    write_audio(archive / "A" / "silence.wav", np.zeros(SR * 7, np.float32), SR)  # recorder gap
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_embedded, s.n_failed) == (3, 0)
    db = index.connect(tmp_path / "db.chorus")
    ids, vecs = db.vectors("spectral")
    assert np.isfinite(vecs).all()
    hits = db.search("spectral", vecs[0]).limit(20).to_pandas()
    assert len(hits) == len(ids) and np.isfinite(hits.score).all()


def test_default_decode_workers():
    assert default_workers(on_cuda=False, cpus=32) == 0  # the CPU model needs the cores
    assert default_workers(on_cuda=True, cpus=32) == 16
    assert default_workers(on_cuda=True, cpus=4) == 3  # one core left to feed the GPU
    assert default_workers(on_cuda=True, cpus=1) == 0


def test_queries_refuse_weights_that_changed_since_the_archive_was_embedded(tmp_path):
    # other weights at the recorded path would embed queries in another space: wrong hits, quietly
    import embedder
    from embedder.weights import save_checkpoint
    from explorer.ingest import embed_span

    m = embedder.load_model("animal2vec-small", weights=None, device="cpu")
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, m.config.to_dict(), m.model.state_dict())
    archive = _make_archive(tmp_path / "archive", n_files=1, seconds=6.0)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, model="animal2vec-small", weights=str(weights), progress=False)
    db = index.connect(db_path)
    query = sorted(archive.rglob("*.wav"))[0]
    assert embed_span(db, "animal2vec-small", query, 0.0, 1.0).shape == (m.dim,)
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in m.model.state_dict().items()}
    save_checkpoint(weights, m.config.to_dict(), state)
    with pytest.raises(IngestError, match="its SHA-256 differs"):
        embed_span(db, "animal2vec-small", query, 0.0, 1.0)
    weights.unlink()
    with pytest.raises(IngestError, match="weights this database was made with are gone"):
        embed_span(db, "animal2vec-small", query, 0.0, 1.0)


def test_store_logits_keeps_each_windows_class_scores(tmp_path):
    from embedder import audio
    from embedder.models.perch import PerchConfig, load, random_net, state_dict_to_flax

    config = PerchConfig(n_classes=3)
    flax = state_dict_to_flax(random_net(config, seed=3).state_dict(), config)
    np.savez(tmp_path / "perch.npz", **flax)
    weights = str(tmp_path / "perch.npz")
    archive = tmp_path / "archive"
    archive.mkdir()
    x = 0.1 * np.random.default_rng(0).standard_normal(32000 * 10).astype(np.float32)
    sf.write(archive / "a.wav", x, 32000, subtype="FLOAT")
    db_path = tmp_path / "db.chorus"
    embed_archive(
        archive, db_path, model="perch", weights=weights, progress=False, store_logits=True
    )
    rows = _windows(db_path, "perch")
    m = load(weights, device="cpu")
    windows = audio.load(archive / "a.wav", 32000)[0].reshape(2, -1)  # (2, 160000)
    np.testing.assert_allclose(np.stack(rows["logits"]), m.logits(windows), atol=1e-4)
    want = m.embed(windows)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack(rows["vector"]), want, atol=1e-4)
    assert index.connect(db_path).meta["models"]["perch"]["logits"] == {"n": 3, "classes": None}
    with pytest.raises(IngestError, match="stored with --store-logits: run again the same way"):
        embed_archive(archive, db_path, model="perch", weights=weights, progress=False)
    with pytest.raises(IngestError, match="no classification head"):
        embed_archive(archive, tmp_path / "s.chorus", progress=False, store_logits=True)


def test_an_archive_whose_files_all_fail_is_reported_not_a_crash(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"not audio at all" * 50)
    s = embed_archive(tmp_path / "a", tmp_path / "db.chorus", progress=False)
    assert (s.n_failed, s.n_windows, s.index) == (1, 0, "none")


def test_an_index_over_windows_that_are_all_gone_is_removed(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=1)
    embed_archive(archive, tmp_path / "db.chorus", progress=False)
    db = index.connect(tmp_path / "db.chorus")
    assert db.index_state("spectral")["state"] == "current"
    next(archive.rglob("*.wav")).write_bytes(b"no longer audio" * 100)
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_failed, s.index) == (1, "none")
    assert db.index_state("spectral")["state"] == "none" and not list(db.faiss_dir.iterdir())


def _embed_cmd(archive, db_path, *extra):
    return [sys.executable, "-m", "explorer.cli", "embed", str(archive), "--db", str(db_path),
            "--hop", "1", "--no-progress", "--chunk-windows", "16", "--batch-size", "8", *extra]  # fmt: skip


def test_two_embeds_on_one_database_leave_no_duplicate_window(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=8, seconds=20.0)
    db_path = tmp_path / "db.chorus"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            _embed_cmd(archive, db_path, "--wait", "300"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    got = _windows(db_path)
    assert not got.duplicated(["path", "channel", "start_s"]).any()
    assert len(got) == 8 * 16  # 5 s windows at a 1 s hop in 20 s
    assert (index.connect(db_path).recordings()["status"] == "ok").all()
    # the one that waited found everything done
    assert sorted(o[0].count("8 already done") for o in outs) == [0, 1]


def test_a_second_embed_exits_2_naming_the_running_one(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=2)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, progress=False)
    holder = index.connect(db_path).writer_lock(what="chorus embed (the first)").acquire()
    try:
        proc = subprocess.run(
            _embed_cmd(archive, db_path, "--wait", "0"), capture_output=True, text=True
        )
    finally:
        holder.release()
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and f"pid {os.getpid()}" in line and "the first" in line


def test_a_rerun_removes_duplicate_and_stray_windows(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=3)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, progress=False)
    before = _windows(db_path)
    db = index.connect(db_path)
    dup = db.windows("spectral").to_pandas().query("recording_id == 0")
    db.add_embeddings("spectral", dup[["recording_id", "channel", "start_s", "end_s", "vector"]])
    stray = dup.assign(recording_id=99)  # a recording that does not exist
    db.add_embeddings("spectral", stray[["recording_id", "channel", "start_s", "end_s", "vector"]])
    s = embed_archive(archive, db_path, progress=False)
    assert (s.n_embedded, s.n_skipped) == (1, 2)
    after = _windows(db_path)
    keys = ["path", "channel", "start_s", "end_s"]
    assert after[keys].equals(before[keys])
    assert set(index.connect(db_path).windows("spectral").to_pandas().recording_id) == {0, 1, 2}


def test_a_lost_embeddings_table_is_re_embedded_by_a_rerun(tmp_path):
    import shutil

    archive = _make_archive(tmp_path / "archive", n_files=2)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, progress=False)
    n = len(_windows(db_path))
    shutil.rmtree(db_path / "lance" / "embeddings_spectral.lance")
    s = embed_archive(archive, db_path, progress=False)
    assert (s.n_embedded, s.n_skipped) == (2, 0)
    assert len(_windows(db_path)) == n


def test_many_small_commits_are_compacted_as_ingest_goes(tmp_path, monkeypatch):
    import index.compaction

    monkeypatch.setattr(index.compaction, "COMPACT_EVERY", 8)
    archive = _make_archive(tmp_path / "archive", n_files=30, seconds=1.0)
    db_path = tmp_path / "db.chorus"
    s = embed_archive(archive, db_path, chunk_windows=1, progress=False)
    assert s.n_embedded == 30
    db = index.connect(db_path)
    for name in ("progress", "recordings", "embeddings_spectral"):
        frags = db.open_table(name).stats()["fragment_stats"]["num_fragments"]
        assert frags <= 9, (name, frags)  # one per commit (30) without compaction
    assert len(_windows(db_path)) == 30
    assert (db.recordings()["status"] == "ok").all()


def test_a_file_that_vanishes_before_planning_is_recorded_and_the_rest_embedded(
    tmp_path, monkeypatch
):
    import explorer.ingest

    archive = _make_archive(tmp_path / "archive", n_files=2)
    found = explorer.ingest.list_archive(archive)
    found.files.append(archive / "gone.wav")
    monkeypatch.setattr(explorer.ingest, "list_archive", lambda root, follow: found)
    s = embed_archive(archive, tmp_path / "db.chorus", progress=False)
    assert (s.n_embedded, s.n_failed) == (2, 1) and s.failed[0][0] == "gone.wav"


def test_cli_exit_codes_for_all_failed_and_an_index_that_cannot_be_built(tmp_path, capsys):
    from explorer.cli import main

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"not audio at all" * 50)
    assert (
        main(["embed", str(tmp_path / "bad"), "--db", str(tmp_path / "a.chorus"), "--no-progress"])
        == 1
    )
    archive = _make_archive(tmp_path / "archive", n_files=1)
    argv = ["embed", str(archive), "--db", str(tmp_path / "b.chorus"), "--no-progress", "--index"]
    capsys.readouterr()
    assert main([*argv, "IVF99999999,Flat"]) == 2  # refused before anything is embedded
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "99,999,999 IVF cells" in err
    assert not (tmp_path / "b.chorus").exists()
    assert main([*argv, "IVF64,Flat"]) == 2  # 3 windows cannot train 64 cells: embedded, no index
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no index built" in err
    assert (
        main(["embed", str(archive), "--db", str(tmp_path / "c.chorus"), "--device", "banana"]) == 2
    )
    for port in ("-1", "99999"):
        with pytest.raises(SystemExit) as exit_:
            main(["explore", "--db", str(tmp_path / "b.chorus"), "--port", port])
        assert exit_.value.code == 2


def test_a_filter_with_a_semicolon_is_refused(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=2)
    embed_archive(archive, tmp_path / "db.chorus", progress=False)
    db = index.connect(tmp_path / "db.chorus")
    q = db.vectors("spectral", [0])[1][0]
    with pytest.raises(ValueError, match="no ';'"):
        db.search("spectral", q).where("site = 'A'; site = 'x'").limit(5).to_pandas()
    hits = db.search("spectral", q).where("site = 'A;B' OR site = 'A'").limit(5).to_pandas()
    assert len(hits) > 0  # a ';' inside a quoted value is fine


def test_a_stale_temporary_index_file_is_removed_by_the_next_save(tmp_path):
    archive = _make_archive(tmp_path / "archive", n_files=1)
    embed_archive(archive, tmp_path / "db.chorus", progress=False)
    faiss_dir = tmp_path / "db.chorus" / "faiss"
    stale = faiss_dir / ".spectral.0123456789ab.index.k1ll3d.tmp"
    fresh = faiss_dir / ".spectral.ba9876543210.index.wr1t1ng.tmp"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    index.connect(tmp_path / "db.chorus").build_index("spectral", rebuild=True)
    assert not stale.exists() and fresh.exists()


def test_a_moved_archive_is_recognised_and_moved_not_embedded_twice(tmp_path, capsys):
    from explorer.cli import main

    archive = _make_archive(tmp_path / "archive", n_files=3)
    db_path = tmp_path / "db.chorus"
    embed_archive(archive, db_path, progress=False)
    before = _windows(db_path)
    moved = archive.rename(tmp_path / "drive2")
    with pytest.raises(IngestError, match="roots .*--move"):
        embed_archive(moved, db_path, progress=False)
    assert main(["roots", "--db", str(db_path)]) == 0
    assert "missing" in capsys.readouterr().out
    assert main(["roots", "--db", str(db_path), "--move", str(archive), str(moved)]) == 0
    s = embed_archive(moved, db_path, progress=False)
    assert (s.n_skipped, s.n_embedded) == (3, 0)
    db = index.connect(db_path)
    assert set(db.recordings()["audio_root"]) == {str(moved.resolve())}
    assert db.meta["audio_roots"] == [str(moved.resolve())]
    assert _windows(db_path).window_id.tolist() == before.window_id.tolist()
    assert main(["roots", "--db", str(db_path), "--move", str(moved), str(tmp_path)]) == 2
