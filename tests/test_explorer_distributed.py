"""``chorus embed --ray`` on a 2-node Ray cluster on this machine: the same database as a plain
run, exactly once, through a lost worker node and a killed driver."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

ray = pytest.importorskip("ray", reason="needs chorus[distributed] (ray)")
pytest.importorskip("lance", reason="needs chorus[distributed] (pylance)")
from ray.cluster_utils import Cluster  # noqa: E402

import index  # noqa: E402
from explorer.ingest import embed_archive  # noqa: E402
from index.shards import committed_shards  # noqa: E402

SR = 16000
N_GOOD = 8
# Ray starts its node processes by fork+exec after the test imported lance: nothing is shared
pytestmark = pytest.mark.filterwarnings("ignore:lance is not fork-safe")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Eight short WAV/FLAC files (one stereo) and one corrupt file."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    for i in range(N_GOOD):
        seconds = 6.0 + 3 * (i % 3)  # 6, 9 or 12 s: 2 or 3 windows with their tails
        t = np.arange(int(seconds * SR)) / SR
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (400 + 250 * i) * t)
        if i == 3:
            x = np.stack([x, 0.5 * x], axis=1)  # (n, 2)
        site = "A" if i % 2 else "B"
        ext = "flac" if i % 2 else "wav"
        path = root / site / f"{site}_2024061{i}_050000.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), SR)
    (root / "A" / "broken.wav").write_bytes(b"RIFF this is not audio" * 50)
    return root


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory):
    """The single-machine database of the same archive."""
    path = tmp_path_factory.mktemp("ref") / "ref.chorus"
    embed_archive(archive, path, progress=False)
    return path


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, two logical CPUs each (the model actors take one a node)."""
    # a lost node is noticed after ~1 s of missed health checks, not Ray's default ~15 s
    fast = {"health_check_period_ms": 200, "health_check_failure_threshold": 5}
    head = {"num_cpus": 2, "include_dashboard": False, "_system_config": fast}
    c = Cluster(initialize_head=True, head_node_args=head)
    c.add_node(num_cpus=2)
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def _windows(db_path):
    rows = index.connect(db_path).windows("spectral").to_pandas()
    return rows.sort_values(["recording_id", "channel", "start_s"]).reset_index(drop=True)


def _assert_same(db_path, reference):
    """Same recordings rows, windows, failures; vectors cosine >= 0.99999; every shard once."""
    db, ref = index.connect(db_path), index.connect(reference)
    cols = [c for c in ref.recordings().columns if c != "abs_path"]
    a, b = db.recordings()[cols], ref.recordings()[cols]
    assert a.equals(b), (a, b)
    assert (a.status == "failed").sum() == 1 and a.error.notna().sum() == 1
    got, want = _windows(db_path), _windows(reference)
    key = ["recording_id", "channel", "start_s", "end_s"]
    assert got[key].equals(want[key])
    assert not got.duplicated(key).any() and got.window_id.is_unique
    cos = np.einsum("ij,ij->i", np.stack(got.vector), np.stack(want.vector))
    assert cos.min() >= 0.99999
    assert sorted(db.done_recordings("spectral").recording_id) == sorted(
        ref.done_recordings("spectral").recording_id
    )
    shards = [s for _, ids in committed_shards(str(db.windows("spectral").uri)) for s in ids]
    assert len(shards) == len(set(shards))


def test_ray_embed_equals_a_single_machine_run(cluster, archive, reference, tmp_path):
    db_path = tmp_path / "ray.chorus"
    s = embed_archive(
        archive,
        db_path,
        progress=False,
        ray_address=cluster.address,
        ray_options={"shard_windows": 5, "commit_shards": 2},
    )
    assert (s.n_embedded, s.n_failed, s.n_found) == (N_GOOD, 1, N_GOOD + 1)
    assert s.index != "none"
    _assert_same(db_path, reference)
    again = embed_archive(archive, db_path, progress=False, ray_address=cluster.address)
    assert (again.n_embedded, again.n_skipped, again.n_windows) == (0, N_GOOD, 0)
    _assert_same(db_path, reference)


@pytest.mark.slow  # a multi-node Ray run: in .ci/run's slow pass
def test_driver_killed_then_rerun_gives_each_window_once(cluster, archive, reference, tmp_path):
    db_path = tmp_path / "killed.chorus"
    cmd = [sys.executable, "-m", "explorer.cli", "embed", str(archive), "--db", str(db_path),
           "--ray", cluster.address, "--no-progress", "--shard-windows", "1",
           "--commit-shards", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at, deadline = None, time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            n = len(index.connect(db_path).done_recordings("spectral"))
        except Exception:  # database or table not there yet
            continue
        if n >= 2:
            proc.send_signal(signal.SIGKILL)
            killed_at = n
            break
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "ran to its end first"
    assert killed_at < N_GOOD
    # the command again (in this process: a second CLI start costs seconds of imports)
    rerun = embed_archive(archive, db_path, progress=False, ray_address=cluster.address)
    assert rerun.n_skipped >= killed_at and rerun.n_embedded + rerun.n_skipped == N_GOOD
    _assert_same(db_path, reference)


@pytest.mark.slow  # a multi-node Ray run: in .ci/run's slow pass
def test_worker_node_lost_mid_job(cluster, archive, reference, tmp_path):
    doomed = cluster.add_node(num_cpus=2)
    lost = []

    def lose_node(n_committed: int) -> None:
        if not lost:  # after the first commit: its actor and tasks die with it
            cluster.remove_node(doomed, allow_graceful=False)
            lost.append(n_committed)

    db_path = tmp_path / "lost.chorus"
    s = embed_archive(
        archive,
        db_path,
        progress=False,
        ray_address=cluster.address,
        ray_options={"shard_windows": 1, "commit_shards": 1, "actors": 3, "on_commit": lose_node},
    )
    assert lost and lost[0] < N_GOOD
    assert (s.n_embedded, s.n_failed) == (N_GOOD, 1)
    _assert_same(db_path, reference)


@pytest.mark.slow  # a multi-node Ray run: in .ci/run's slow pass
def test_ray_embeds_a_damaged_file_as_partial_like_a_single_machine_run(cluster, tmp_path):
    """A FLAC cut mid-file: its good part embedded and the recording marked ``partial`` with
    the damage and the decoded length, the same row and windows as without --ray."""
    root = tmp_path / "damaged"
    root.mkdir()
    t = np.arange(int(12 * SR)) / SR
    sf.write(root / "good.flac", (0.2 * np.sin(2 * np.pi * 700 * t)).astype(np.float32), SR)
    data = (root / "good.flac").read_bytes()
    (root / "cut.flac").write_bytes(data[: len(data) // 2])
    plain = embed_archive(root, tmp_path / "plain.chorus", progress=False)
    s = embed_archive(
        root, tmp_path / "ray.chorus", progress=False, ray_address=cluster.address,
        ray_options={"shard_windows": 1, "commit_shards": 1},
    )  # fmt: skip
    assert (s.n_embedded, s.n_partial, s.n_failed) == (2, 1, 0) == (
        plain.n_embedded, plain.n_partial, plain.n_failed
    )  # fmt: skip
    assert s.partial == plain.partial and "cut.flac" in s.partial[0][0]
    assert s.hours == pytest.approx(plain.hours)
    db, ref = index.connect(tmp_path / "ray.chorus"), index.connect(tmp_path / "plain.chorus")
    cols = [c for c in ref.recordings().columns if c != "abs_path"]
    a, b = db.recordings()[cols], ref.recordings()[cols]
    assert a.equals(b), (a, b)
    assert sorted(a.status) == ["ok", "partial"]
    key = ["recording_id", "channel", "start_s", "end_s"]
    assert _windows(tmp_path / "ray.chorus")[key].equals(_windows(tmp_path / "plain.chorus")[key])
    again = embed_archive(
        root, tmp_path / "ray.chorus", progress=False, ray_address=cluster.address
    )
    assert (again.n_embedded, again.n_skipped) == (0, 2)
