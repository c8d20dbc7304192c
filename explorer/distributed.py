"""``chorus embed --ray``: the same embed step on a Ray cluster, committed exactly once.

The pipeline (DESIGN.md, Scale-out)::

    driver: plan (as a single-machine run: what is done is skipped) -> shards of whole files
    CPU tasks: decode a shard (its files' windows; a file that fails is reported, never the shard)
    model actors (one GPU each where there are GPUs, else one CPU each): embed, reserve window
        ids, write uncommitted Lance fragments, return a receipt
    driver: commit finished shards in batches (Append + done-markers), then the FAISS index

Ray Core tasks and actors rather than a Ray Data pipeline: the driver must see each shard's
receipt as it finishes, with the shard's identity, to commit it once and record it; tasks and
actors give that directly (``ray.wait`` on one reference per shard), with Ray's own retries of
tasks, restarts of actors and reconstruction of lost objects when a node goes, the decoded audio
passed zero-copy through the object store, and backpressure that is one number (shards in
flight). The writes are Lance's own ``write_fragments`` + ``Append`` (why: :mod:`index.shards`).

Failure and resume (nothing committed is lost or duplicated):

* a task or actor lost with its node is retried by Ray; a try whose receipt never came back
  leaves only unreferenced files;
* the driver keeps the ids of the shards it committed, so no receipt is committed twice;
* the driver killed: the writer lock goes with its process; a rerun plans again from the
  database (recordings with a done-marker are skipped, windows without one are deleted by
  :func:`index.repair.settle_windows`) and embeds the rest.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from explorer.ingest import IngestError, end_bar, mark_partial, progress_bar
from explorer.plan import expected_windows, plan_run
from index.compaction import compact_if_due

SHARD_WINDOWS = 1024  # windows a shard aims at: ~0.6 GB of 5 s audio at 32 kHz, float32
COMMIT_SHARDS = 16  # finished shards per commit: each commit costs ~4 table versions
COMMIT_WAIT_S = 30.0  # s a finished shard waits at most for the others of its commit
TASK_RETRIES = 3  # tries of a decode task beyond the first, after its worker or node died
SHARD_TRIES = 3  # times a shard is sent again after its actor was lost (a node went)
INSTALL_HINT = "pip install 'chorus[distributed]'"


def check_ray() -> None:
    """Raise :class:`IngestError` with the install line when Ray or pylance is missing."""
    try:
        import lance  # noqa: F401
        import ray  # noqa: F401
    except ImportError as err:
        raise IngestError(
            f"--ray needs Ray and pylance ({err.name} is missing): {INSTALL_HINT}"
        ) from None


@dataclass
class Shard:
    """Whole files decoded and embedded together; committed as one unit."""

    shard_id: str
    keys: list[int]
    paths: list[str]
    expected: int  # windows the files' probed durations promise
    need: int = 0  # windows it turned out to have, when more than expected


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over shards (the benchmark's per-stage costs)."""

    plan: float = 0.0
    decode: float = 0.0
    model: float = 0.0
    write: float = 0.0
    commit: float = 0.0
    shards: int = 0
    commits: int = 0
    per_shard: list[dict] = field(default_factory=list)


def plan_shards(tasks, durations: dict, spec, shard_windows: int, run_id: str) -> list[Shard]:
    """Cut the planned files, in planning order, into shards of about ``shard_windows`` windows
    (a file is never split: its windows are committed together with its done-marker)."""
    shards, keys, paths, n = [], [], [], 0
    for task in tasks:
        keys.append(int(task.key))
        paths.append(str(task.path))
        n += expected_windows(durations[task.key], spec)
        if n >= shard_windows:
            shards.append(Shard(f"{run_id}-{len(shards):06d}", keys, paths, n))
            keys, paths, n = [], [], 0
    if keys:
        shards.append(Shard(f"{run_id}-{len(shards):06d}", keys, paths, n))
    return shards


class _Committer:
    """Commits finished shards in batches on the driver: Append, done-markers, failures."""

    def __init__(
        self,
        db,
        model,
        uri,
        run_id,
        summary,
        durations,
        commit_shards,
        wait_s,
        on_commit,
        times,
        bar,
    ):
        self.db, self.model, self.uri, self.run_id = db, model, uri, run_id
        self.summary, self.durations, self.every, self.wait_s = (
            summary,
            durations,
            commit_shards,
            wait_s,
        )
        self.on_commit, self.times, self.bar = on_commit, times, bar
        self.held: list[dict] = []
        self.committed: set[str] = set()
        self.oldest = None

    def add(self, receipt: dict) -> None:
        if receipt["shard_id"] in self.committed or any(
            r["shard_id"] == receipt["shard_id"] for r in self.held
        ):
            return  # a second receipt of one shard: its files stay unreferenced
        self.held.append(receipt)
        self.oldest = self.oldest or time.monotonic()
        self.bar.update(receipt["n_windows"])
        t = self.times
        t.decode += receipt["decode_s"]
        t.model += receipt["model_s"]
        t.write += receipt["write_s"]
        t.shards += 1
        t.per_shard.append({k: receipt[k] for k in ("n_windows", "decode_s", "model_s", "write_s")})

    def due(self) -> bool:
        if not self.held:
            return False
        return len(self.held) >= self.every or time.monotonic() - self.oldest >= self.wait_s

    def flush(self) -> None:
        if not self.held:
            return
        from index.shards import commit_shards

        t0 = time.perf_counter()
        held, self.held, self.oldest = self.held, [], None
        ids = [r["shard_id"] for r in held]
        # an empty shard (all its files failed) has no fragments: its failures are still recorded
        commit_shards(self.uri, [f for r in held for f in r["fragments"]], ids, self.run_id)
        self.committed.update(ids)  # from here a crash is repaired by the next run's settle
        files = [f for r in held for f in r["files"]]  # (key, n, error, damage, decoded s)
        good = [(k, n) for k, n, err, _, _ in files if err is None]
        bad = [(k, err) for k, _, err, _, _ in files if err is not None]
        damaged = {k: (dmg, sec) for k, _, err, dmg, sec in files if err is None and dmg}
        # status, damage and decoded length before the done-marker, as a single-machine run
        mark_partial(self.db, self.summary, [(k, sec, dmg) for k, (dmg, sec) in damaged.items()])
        self.db.finish_recordings(self.model, good)  # checks each count, then the markers
        self.db.set_status([k for k, _ in good if k not in damaged], "ok")
        recs = [self.db.recording(k) for k, _ in bad]
        if bad:
            self.db.upsert_recordings(
                [
                    dict(audio_root=r["audio_root"], path=r["path"], status="failed", error=err)
                    for r, (_, err) in zip(recs, bad, strict=True)
                ]
            )
        s = self.summary
        s.n_embedded += len(good)
        s.n_windows += sum(n for _, n in good)
        s.hours += sum(damaged.get(k, (0, self.durations[k]))[1] for k, _ in good) / 3600
        s.n_failed += len(bad)
        s.failed.extend((r["path"], err) for r, (_, err) in zip(recs, bad, strict=True))
        compact_if_due(self.db, self.model)
        self.times.commit += time.perf_counter() - t0
        self.times.commits += 1
        if self.on_commit is not None:
            self.on_commit(len(self.committed))


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None):
    """Join the cluster at ``address`` (``"auto"``: the running one, else start a local one);
    a cluster this call started, or joined, is left again at the end."""
    import ray

    if ray.is_initialized():  # the caller's own connection (tests, notebooks): keep it
        yield ray
        return
    quiet = dict(logging_level="WARNING", log_to_driver=False)
    if address in (None, "", "auto"):
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:  # no running cluster: a local one for this run
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    else:
        ray.init(address=address, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


def _n_actors(ray, asked: int | None) -> tuple[int, float]:
    """(model actors, GPUs each): one per GPU where the cluster has GPUs, else one per node."""
    if asked:
        gpus = ray.cluster_resources().get("GPU", 0)
        return int(asked), 1.0 if gpus >= asked else 0.0
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive"))), 0.0


def embed_files_ray(db, m, spec, root, audio_root, files, summary, **run) -> StageTimes:
    """Plan, decode, embed and commit every file that needs it, on Ray (the writer lock is held
    by the caller, :func:`explorer.ingest.embed_archive`, for the whole run).

    ``run["ray_options"]`` may set ``shard_windows``, ``commit_shards``, ``commit_wait_s``,
    ``actors`` (model actors; default one per GPU, else one per node), ``in_flight`` (shards
    decoded or embedded at once), ``num_cpus`` (of a local cluster started here) and
    ``on_commit`` (called with the number of shards committed so far, after each commit).
    """
    opts = dict(run["ray_options"])
    model = summary.model
    times = summary.stages = StageTimes()
    t0 = time.perf_counter()
    tasks, durations = plan_run(db, audio_root, root, files, summary, run)
    run_id = uuid.uuid4().hex[:12]
    shards = plan_shards(
        tasks, durations, spec, int(opts.get("shard_windows", SHARD_WINDOWS)), run_id
    )
    times.plan = time.perf_counter() - t0
    if not shards:
        return times
    from index.shards import prepare_table

    extras = {"logits": int(m.n_logits)} if run["store_logits"] else {}
    uri, schema = prepare_table(db, model, m.dim, extras)
    bar = progress_bar(sum(s.expected for s in shards), model, run["progress"])
    with ray_session(run["ray_address"], opts.get("num_cpus")) as ray, contextlib.closing(bar):
        from explorer.ray_tasks import ShardEmbedder, decode_shard

        n_actors, gpus = _n_actors(ray, opts.get("actors"))
        actor = ray.remote(ShardEmbedder).options(
            num_cpus=0 if gpus else 1,
            num_gpus=gpus,
            max_restarts=-1,
            # system failures only (a lost node, a restarting actor): retried until it is back;
            # an exception of the model itself is not retried and ends the run
            max_task_retries=-1,
        )
        actors = [
            actor.remote(run["loader"], run["batch_size"], run["store_logits"], uri, schema)
            for _ in range(n_actors)
        ]
        decode = ray.remote(decode_shard).options(num_cpus=1, max_retries=TASK_RETRIES)
        committer = _Committer(
            db,
            model,
            uri,
            run_id,
            summary,
            durations,
            int(opts.get("commit_shards", COMMIT_SHARDS)),
            float(opts.get("commit_wait_s", COMMIT_WAIT_S)),
            opts.get("on_commit"),
            times,
            bar,
        )
        in_flight = int(opts.get("in_flight", 2 * n_actors + 2))
        try:
            _drive(ray, db, model, shards, actors, decode, spec, committer, in_flight)
            end_bar(bar)
        finally:
            for a in actors:
                ray.kill(a)
    return times


def _drive(ray, db, model, shards, actors, decode, spec, committer, in_flight: int) -> None:
    """Keep ``in_flight`` shards going, least-busy actor first; commit receipts as they come.

    Window ids are reserved here, on the driver, as each shard is sent (its probed window
    count): only the driver writes ``chorus.json``. A shard that decodes to more windows comes
    back unwritten and is sent again with as many ids as it needs.
    """
    from ray.exceptions import RayActorError

    todo = list(reversed(shards))
    running: dict = {}  # receipt ref -> (shard, actor index)
    load = [0] * len(actors)
    tries: dict[str, int] = {}
    while todo or running:
        while todo and len(running) < in_flight:
            shard = todo.pop()
            n_ids = max(shard.expected, shard.need)
            first = int(db.reserve_window_ids(model, n_ids)[0]) if n_ids else 0
            decoded = decode.remote(shard.keys, shard.paths, spec)
            i = int(np.argmin(load))
            load[i] += 1
            ref = actors[i].run.remote(shard.shard_id, decoded, first, n_ids)
            running[ref] = (shard, i)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=committer.wait_s)
        for ref in ready:
            shard, i = running.pop(ref)
            load[i] -= 1
            try:
                receipt = ray.get(ref)
            except RayActorError:  # its actor went with its node: decode and embed it again
                tries[shard.shard_id] = tries.get(shard.shard_id, 0) + 1
                if tries[shard.shard_id] > SHARD_TRIES:
                    committer.flush()
                    raise
                todo.append(shard)
                continue
            except Exception:  # a shard that failed all its tries ends the run: keep the rest
                committer.flush()
                raise
            if receipt["need"]:  # more windows than its probed durations promised
                shard.need = receipt["need"]
                todo.append(shard)
                continue
            committer.add(receipt)
        if committer.due() or not (todo or running):
            committer.flush()
