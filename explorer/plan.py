"""Which files of an archive a run embeds: register them, settle what earlier runs left, plan tasks.

One commit registers every new or changed file (probed, or recorded as failed with its reason);
a known, unchanged file is skipped when it is done or failed before (unless retried). Links that
are not read and names that are not UTF-8 are recorded as failed, never opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from explorer.recordings import parse_site, parse_start_time, recording_start

MIN_RECORDING_S = 0.1  # s: shorter files are recorded as failed, not embedded as a padded window


def plan_files(db, model, audio_root, root, files, site, retry_failed, summary, refused=None):
    """Register files (one commit) and decide which to embed: (tasks, {recording_id: duration_s}).

    ``refused`` maps the links that are not read to their reason: they are recorded as failed.
    A file name that is not UTF-8 is recorded as failed under its escaped name
    (:func:`_escaped_name`).
    """
    refused = refused or {}
    from index.repair import settle_windows

    recs = db.recordings()
    known = {r["path"]: r for r in recs.to_dict("records") if r["audio_root"] == audio_root}
    # duplicates, lost or stray windows: their recordings lose the done-marker and are redone
    done, _ = settle_windows(db, model)
    done_ids = {int(r.recording_id): (int(r.size), float(r.mtime)) for r in done.itertuples()}
    records, settled = [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        why = refused.get(path)
        if not _utf8(rel):
            rel, why = _escaped_name(rel), NOT_UTF8
        stamp = _stamp(path, rel, summary, follow=why is None)
        if stamp is None:
            continue
        old = known.get(rel)
        if old is not None and _still_good(db, model, old, stamp, done_ids, retry_failed, summary):
            if old["status"] == "pending":  # a run stopped between its last two commits
                settled.append(int(old["recording_id"]))
            continue
        if why is not None:  # never opened: recorded with its reason
            records.append(_refused_record(rel, stamp, audio_root, site, why, summary))
        else:
            records.append(_new_record(path, rel, stamp, audio_root, site, summary))
    db.set_status(settled, "ok")
    ids = db.upsert_recordings(records) if records else []
    return _tasks(db, model, root, known, ids, records)


def _stamp(path: Path, rel: str, summary, follow: bool = True) -> tuple[int, float] | None:
    """(size, mtime) of a file (of a link itself unless ``follow``), or None after recording why
    it cannot be embedded."""
    try:
        st = path.stat() if follow else path.lstat()
    except OSError as err:  # gone (or unreadable) since discovery: record it and go on
        summary.n_failed += 1
        summary.failed.append((rel, f"cannot be read: {err.strerror or err}"))
        return None
    return int(st.st_size), float(st.st_mtime)


def _still_good(db, model, old: dict, stamp, done_ids, retry_failed, summary) -> bool:
    """Whether a known, unchanged file needs no new run: it is embedded already, or it failed
    before and is not retried (counted in ``summary`` either way)."""
    rid = int(old["recording_id"])
    if (int(old["size"]), float(old["mtime"])) != stamp:
        return False
    if done_ids.get(rid) == stamp:
        summary.n_skipped += 1
        return True
    if old["status"] == "failed" and not retry_failed:
        if rid in done_ids:  # windows of a version that read, before it turned bad
            db.begin_recording(model, rid)
        summary.n_failed += 1
        summary.failed.append((old["path"], str(old["error"])))
        return True
    return False


def _refused_record(rel: str, stamp, audio_root, site, why: str, summary) -> dict:
    """The recordings row of a file that is not read (a refused link, a name that is not
    UTF-8): status failed, its reason; its start time from the name alone."""
    summary.n_failed += 1
    summary.failed.append((rel, why))
    return dict(
        audio_root=audio_root,
        path=rel,
        size=stamp[0],
        mtime=stamp[1],
        site=parse_site(rel, site),
        start_time=parse_start_time(rel.rsplit("/", 1)[-1]),
        status="failed",
        error=why,
    )


def add_link_targets(db, targets: list[str]) -> None:
    """Record in ``chorus.json`` the real places outside the roots that followed links read."""
    new = [t for t in targets if t not in db.meta.get("link_targets", [])]
    if new:
        db.update_meta(lambda meta: meta.setdefault("link_targets", []).extend(new))


def _new_record(path: Path, rel: str, stamp, audio_root, site, summary) -> dict:
    """The recordings row of a file to embed, probed (or marked failed if it cannot be read)."""
    from embedder import audio

    rec = dict(
        audio_root=audio_root,
        path=rel,
        size=stamp[0],
        mtime=stamp[1],
        site=parse_site(rel, site),
        start_time=recording_start(path),
        status="pending",  # "ok" once all its windows are committed
        error=None,
    )
    try:
        info = audio.probe(path)
        if info.duration_s < MIN_RECORDING_S:
            raise audio.AudioError(
                f"{path}: too short to embed ({info.duration_s:.3f} s < {MIN_RECORDING_S} s)"
            )
        rec.update(duration_s=info.duration_s, sample_rate=info.sample_rate, channels=info.channels)
    except audio.AudioError as err:
        rec.update(status="failed", error=str(err))
        summary.n_failed += 1
        summary.failed.append((rel, str(err)))
    return rec


def _tasks(db, model, root, known, ids, records):
    """Files to decode, and their durations, once their rows are stored."""
    from embedder.batching import FileTask

    tasks, durations = [], {}
    for rid, rec in zip(ids, records, strict=True):
        if rec["path"] in known:  # drop windows an interrupted or older run left (failed too)
            db.begin_recording(model, int(rid))
        if rec["status"] == "failed":
            continue
        tasks.append(FileTask(int(rid), str(root / rec["path"])))
        durations[int(rid)] = rec["duration_s"]
    return tasks, durations


NOT_UTF8 = "the file name is not valid UTF-8 (stored escaped, \\xNN per byte): rename the file"


def _escaped_name(rel: str) -> str:
    """A name that is not UTF-8, as text: its undecodable bytes as ``\\xNN``.

    Such a file is recorded as failed under this name rather than embedded: LanceDB stores
    UTF-8 text, and a reversible encoding of the bytes would have to be undone by every reader
    (search results, the explorer) and could not be in the exports, whose paths point into the
    original files for Raven, Audacity and Kaleidoscope: they would name a file that does not
    exist. The name shows which file to rename.
    """
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file system, kept as surrogates
        return False
    return True


def expected_windows(duration_s: float, spec) -> int:
    """Windows a file of ``duration_s`` (its decoded length) will give."""
    from embedder import audio

    n = int(round(duration_s * spec.sample_rate))
    return audio.count_windows(n, spec.sample_rate, spec.window_s, spec.hop_s, spec.min_tail_s)


def plan_run(db, audio_root, root: Path, files, summary, run: dict):
    """:func:`plan_files` with a run's options (``site``, ``retry_failed``, ``refused``) for the
    model ``summary.model``: (tasks, {recording_id: duration_s})."""
    return plan_files(
        db,
        summary.model,
        audio_root,
        root,
        files,
        run["site"],
        run["retry_failed"],
        summary,
        run["refused"],
    )
