"""What runs on the Ray workers of ``chorus embed --ray``: the decode task and the model actor.

Kept apart from :mod:`explorer.distributed` (the driver) so that a worker process imports only
what its job needs: a decode task the decoders, not LanceDB or torch; the model actor its model,
and LanceDB only to write fragments. Every new worker pays these imports once.
"""

from __future__ import annotations

import time

import numpy as np


def decode_shard(keys: list[int], paths: list[str], spec) -> dict:
    """Decode a shard's files into windows (a Ray task). A file that fails keeps its error and
    loses its windows; the shard goes on.

    Parameters
    ----------
    keys, paths : the shard's recording ids and absolute file paths, in planning order.
    spec : :class:`embedder.batching.WindowSpec` of the run.

    Returns
    -------
    dict with ``audio`` (n, window_samples) float32, ``recording_id``/``channel``/``start_s``/
    ``end_s`` (n,), ``files`` [(key, n_windows, error or None, damage or None, decoded s or
    None)], ``seconds``. A damaged file (:class:`embedder.audio.PartialAudio`) keeps its windows
    and says where the damage is and how much decoded, as in a single-machine run.
    """
    from embedder.audio import PartialAudio

    t0 = time.perf_counter()
    win = int(round(spec.sample_rate * spec.window_s))
    parts, files = [], []
    for key, path in zip(keys, paths, strict=True):
        mine, n, error, damage, decoded_s = [], 0, None, None, None
        try:
            for wb in _windows(path, spec):
                mine.append((int(key), wb))
                n += len(wb.start_s)
        except PartialAudio as err:  # all that decodes is in ``mine``: embedded, marked partial
            damage, decoded_s = str(err), float(err.duration_s)
        except Exception as err:  # noqa: BLE001 (as iter_file: a bad file must not end the run)
            error = _error_text(err)
        files.append((int(key), n, error, damage, decoded_s))
        if error is None:
            parts.extend(mine)
    lengths = [len(wb.start_s) for _, wb in parts]
    out = {
        "audio": np.concatenate([wb.audio for _, wb in parts])
        if parts
        else np.zeros((0, win), np.float32),
        "recording_id": np.repeat(np.array([k for k, _ in parts], np.int64), lengths),
        "channel": np.repeat(np.array([wb.channel for _, wb in parts], np.int32), lengths),
        "start_s": np.concatenate([wb.start_s for _, wb in parts]) if parts else np.zeros(0),
        "end_s": np.concatenate([wb.end_s for _, wb in parts]) if parts else np.zeros(0),
        "files": files,
    }
    out["seconds"] = time.perf_counter() - t0
    return out


def _windows(path: str, spec):
    # the windowing of embedder.batching.iter_file, without the torch that module imports
    from embedder import audio

    return audio.iter_windows(
        path,
        spec.sample_rate,
        spec.window_s,
        spec.hop_s,
        channels=spec.channels,
        min_tail_s=spec.min_tail_s,
    )


def _error_text(err: Exception) -> str:
    from embedder import audio

    return str(err) if isinstance(err, audio.AudioError) else f"{type(err).__name__}: {err}"


class ShardEmbedder:
    """Model actor body: embeds decoded shards and writes them as uncommitted fragments.

    Parameters
    ----------
    loader : ``model``, ``weights``, ``device``, ``options`` for :func:`embedder.load_model`.
    batch_size : windows per model call (None: ingest's defaults for the device).
    store_logits : also write the head's logits (column ``logits``).
    uri, schema : the embeddings table (:func:`index.shards.prepare_table`).
    """

    def __init__(self, loader: dict, batch_size: int | None, store_logits: bool, uri: str, schema):
        import embedder
        from explorer.ingest import DEFAULT_BATCH, DEFAULT_GPU_BATCH

        # "auto" finds the GPU Ray gave this actor (CUDA_VISIBLE_DEVICES), else the CPU
        self.m = embedder.load_model(
            loader["model"], weights=loader["weights"], device=loader["device"], **loader["options"]
        )
        on_cuda = getattr(getattr(self.m, "device", None), "type", None) == "cuda"
        self.batch_size = batch_size or (DEFAULT_GPU_BATCH if on_cuda else DEFAULT_BATCH)
        if hasattr(self.m, "device"):
            self.m.batch_size = self.batch_size
        self.store_logits, self.uri, self.schema = store_logits, uri, schema

    def run(self, shard_id: str, decoded: dict, first_id: int, n_ids: int) -> dict:
        """Embed ``decoded`` (from :func:`decode_shard`) and write its fragments with window ids
        ``first_id ...`` (``n_ids`` reserved); return the receipt. A shard with more windows than
        ids is not written: its receipt asks for more (``need``)."""
        from index.shards import write_fragments

        n = len(decoded["audio"])
        if n > n_ids:
            return _receipt(shard_id, decoded, [], need=n)
        t0 = time.perf_counter()
        audio = decoded["audio"]  # (n, window_samples), read-only view of the object store
        vecs, logits = [], []
        for i in range(0, n, self.batch_size):
            part = np.array(audio[i : i + self.batch_size])  # (B, window_samples)
            if self.store_logits:
                v, lg = self.m.embed_with_logits(part)
                logits.append(np.asarray(lg, np.float32))
            else:
                v = self.m.embed(part)
            vecs.append(np.asarray(v, np.float32))
        t1 = time.perf_counter()
        rows = {k: decoded[k] for k in ("recording_id", "channel", "start_s", "end_s")}
        rows["vector"] = np.concatenate(vecs) if vecs else np.zeros((0, self.m.dim), np.float32)
        if self.store_logits:
            rows["logits"] = (
                np.concatenate(logits) if logits else np.zeros((0, self.m.n_logits), np.float32)
            )
        ids = np.arange(first_id, first_id + n, dtype=np.int64)
        fragments = write_fragments(self.uri, self.schema, rows, ids) if n else []
        return _receipt(
            shard_id, decoded, fragments, model_s=t1 - t0, write_s=time.perf_counter() - t1
        )


def _receipt(shard_id, decoded, fragments, need=0, model_s=0.0, write_s=0.0) -> dict:
    return {
        "shard_id": shard_id,
        "fragments": fragments,
        "files": decoded["files"],
        "n_windows": len(decoded["audio"]),
        "need": need,
        "decode_s": decoded["seconds"],
        "model_s": model_s,
        "write_s": write_s,
    }
