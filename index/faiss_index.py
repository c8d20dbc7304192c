"""FAISS accelerator index beside each embeddings table.

Files in ``<db>/faiss/``: ``<model>.<token>.index`` (FAISS, over positions 0..n-1),
``<model>.<token>.ids.npy`` (position -> window_id, the IndexIDMap2 equivalent; kept outside
FAISS so that filtered searches can use a cheap position bitmap) and ``<model>.json``
(:class:`IndexSettings`, written last, naming the current token).

Choice by archive size (``factory="auto"``, :func:`choose_tier`; the tiers are the dataclasses
of :mod:`index.tiers`), all on L2-normalised vectors with inner product. Where the table's
vectors can be read in place (:mod:`index.vector_view`: Lance's plain pages, mapped), the index
never holds a second copy of them:

* n < ``FLAT_MAX``           flat   ``SQfp16``                exact, 2*d bytes/vector
* otherwise                  lowmem ``IVF<nlist>,PQ<d/8>x4fs``  4-bit fast-scan PQ codes only
                             (d/16 bytes/vector); the search re-ranks a ``k_factor`` x k
                             shortlist (growing with n) exactly with the mapped rows, and
                             ``.exact()`` scans the mapped pages with FAISS

Where they cannot (another Lance layout, vectors of 128 bytes or less, a remote store):

* n < ``FLAT_MAX``           flat   ``SQfp16``                exact, 2*d bytes/vector
* n < ``HNSW_MAX``           hnsw   ``HNSW32,SQfp16``         graph search, float16 vectors kept
* 2*d*n < ``LOWMEM_BYTES``   ivf    ``IVF<nlist>,PQ<d/8>x4fs,Refine(SQfp16)``  the shortlist
                             re-ranked with the index's own float16 copy
* otherwise                  lowmem, the shortlist read from the table with ``take``

Float16 storage is the default (``float16=False`` keeps float32: ``Flat`` / ``RFlat``): it rounds
a unit vector's components by <= 2**-11 relative, scores by ~1e-5, which leaves recall@10
unchanged, and it halves the bytes every exact scan reads. An index that keeps the vectors is
also the exact kernel: ``.exact()`` runs a FAISS exhaustive scan over it
(:meth:`AnnIndex.exact_search`).

Thresholds come from ``benchmarks/index_bench.py`` (see benchmarks/RESULTS.md, "## Index").
The index records the table version and window ids it covers. Search adds windows committed
since (exact scores) and hides deleted ones, so a stale index never loses results;
``build_index`` adds new windows incrementally and rebuilds when the size tier changes or
more than ``REBUILD_DELETED_FRACTION`` of the indexed windows were deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import faiss
import numpy as np

from .files import atomic_write
from .tiers import (
    EF_MAX,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    IVF_CELLS_PER_SQRT_N,
    IVF_KMEANS_ITERS,
    IVF_NPROBE,
    IVF_REGROW_FACTOR,
    LOWMEM_K_FACTOR,
    PQ_DIMS_PER_CODE,
    REFINE_K_FACTOR,
    REFINE_K_FACTOR_BASE_N,
    REFINE_K_FACTOR_MIN,
    FlatTier,
    HnswTier,
    IvfTier,
    LowMemTier,
    Tier,
    base_index,
    factory_cells,
    in_place_k_factor,
    refine_k_factor,
    tier_for_factory,
    tier_from_dict,
)

__all__ = [  # per-tier constants re-exported: callers and benchmarks read them here
    "EF_MAX",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "IVF_CELLS_PER_SQRT_N",
    "IVF_KMEANS_ITERS",
    "IVF_NPROBE",
    "IVF_REGROW_FACTOR",
    "LOWMEM_K_FACTOR",
    "REFINE_K_FACTOR",
    "REFINE_K_FACTOR_BASE_N",
    "REFINE_K_FACTOR_MIN",
    "AnnIndex",
    "IndexDamaged",
    "IndexSettings",
    "Tier",
    "check_factory",
    "check_params",
    "choose_factory",
    "choose_tier",
    "full_build",
    "refine_k_factor",
    "remove_index",
]

FLAT_MAX = 20_000  # windows; exact search reads 4*d bytes/window/query (~20-40 ms at 1536-d)
HNSW_MAX = 100_000  # windows; HNSW builds at ~1.2 ms/window on 2 cores; IVF builds faster beyond
# where the table cannot be read in place: bytes of the float16 re-rank copy (2*d per window)
# beyond which the index keeps codes only: 4 GiB is 1.4 M windows of 1536-d. Below it the in-RAM
# re-rank is several times faster than Lance's take (p50 3 ms at 1 M against 16-24 ms); above it
# that copy outgrows a laptop (benchmarks/RESULTS.md)
LOWMEM_BYTES = 4 << 30
IVF_MAX_CELLS = (
    1 << 20
)  # an explicit factory past this is a typo: 4 sqrt(n) reaches it at 69 G windows
TRAIN_POINTS_PER_CELL = 40  # k-means sample size per IVF cell (FAISS warns below 39)
TRAIN_SAMPLE_MAX = 200_000  # cap on the training sample (vectors)
REBUILD_DELETED_FRACTION = 0.2  # rebuild when this share of indexed windows is deleted
ADD_BATCH = 20_000  # vectors added per FAISS call during incremental updates

TOKEN_CHARS = 12  # hex characters of an index generation token


@dataclasses.dataclass
class IndexSettings:
    """What an index file holds; saved as ``faiss/<model>.json``."""

    model: str
    factory: str  # FAISS index_factory string (metric: inner product)
    dim: int
    n_vectors: int
    table_version: int  # embeddings table version the index covers
    params: dict  # search-time parameters: efSearch / nprobe / k_factor
    auto: bool = True  # chosen by size (may be re-chosen as the archive grows)
    trained_on: int = 0  # vectors in the training sample (0: no training needed)
    built_n: int = 0  # windows at the last full build (for IVF re-growth)
    build_s: float = 0.0  # seconds of the last build/update
    metric: str = "inner_product"
    created: str = ""
    faiss_version: str = faiss.__version__
    action: str = "built"  # "built" | "updated" | "unchanged" (this call)
    token: str = ""  # generation of the data files <model>.<token>.index / .ids.npy
    checksums: dict = dataclasses.field(default_factory=dict)  # file kind -> sha256 hex
    database_id: str = ""  # chorus.json's database_id: another database's index is refused
    tier: Tier | None = None  # None: derived from ``factory`` (settings saved before tiers)

    def __post_init__(self) -> None:
        if self.tier is None:
            self.tier = tier_for_factory(self.factory)
        elif isinstance(self.tier, dict):
            self.tier = tier_from_dict(self.tier)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["tier"] = self.tier.to_dict()
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexSettings:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def choose_tier(
    n: int, dim: int, float16: bool = True, in_place: bool = False
) -> tuple[Tier, dict]:
    """The tier for ``n`` vectors of ``dim`` and its search parameters (module docstring).

    ``in_place``: the table's vectors can be read in place (:mod:`index.vector_view`), so from
    ``FLAT_MAX`` windows up the index keeps codes only and re-ranks from the table."""
    if in_place and n >= FLAT_MAX and dim % PQ_DIMS_PER_CODE == 0:
        tier = LowMemTier.for_size(n, dim)
        return tier, {**tier.params_for_size(n), "k_factor": in_place_k_factor(n)}
    if n < FLAT_MAX:
        tier = FlatTier.for_size(n, dim, float16)
    elif n < HNSW_MAX:
        tier = HnswTier.for_size(n, dim, float16)
    elif 2 * dim * n < LOWMEM_BYTES or dim % PQ_DIMS_PER_CODE:
        tier = IvfTier.for_size(n, dim, float16)
    else:
        tier = LowMemTier.for_size(n, dim)
    return tier, tier.params_for_size(n)


def choose_factory(
    n: int, dim: int, float16: bool = True, in_place: bool = False
) -> tuple[str, dict]:
    """Factory string and search parameters of :func:`choose_tier`."""
    tier, params = choose_tier(n, dim, float16, in_place)
    return tier.factory, params


class AnnIndex:
    """A FAISS index over positions plus the position -> window_id map and its settings."""

    def __init__(self, index: faiss.Index, ids: np.ndarray, settings: IndexSettings):
        self.index = index
        self.ids = np.asarray(ids, np.int64)  # (n,) window id of each position
        self.settings = settings
        if index.ntotal != len(self.ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(self.ids)} ids")
        self.tier: Tier = settings.tier
        self.exact_storage = self.tier.exact_vectors
        self._kernel = self.tier.exact_kernel(index)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_exhaustive(self) -> bool:
        """True when search scores every vector (Flat): ANN results are exact."""
        return self.tier.exhaustive

    # -- files
    @staticmethod
    def settings_path(folder: Path, model: str) -> Path:
        return folder / f"{model}.json"

    @staticmethod
    def stable_paths(folder: Path, model: str) -> tuple[Path, Path]:
        return folder / f"{model}.index", folder / f"{model}.ids.npy"

    @staticmethod
    def data_paths(folder: Path, model: str, token: str) -> tuple[Path, Path]:
        return folder / f"{model}.{token}.index", folder / f"{model}.{token}.ids.npy"

    @classmethod
    def load(cls, folder: Path, model: str) -> AnnIndex | None:
        """Load the saved index, or None if absent or damaged (then search is exact)."""
        try:
            return cls.load_checked(folder, model)
        except (FileNotFoundError, IndexDamaged):
            return None

    @classmethod
    def load_checked(cls, folder: Path, model: str, mmap: bool = False) -> AnnIndex:
        """Load the saved index after checking its files against the checksums saved with it.

        Raises FileNotFoundError when there is no index, :class:`IndexDamaged` (saying what is
        wrong) when its files do not match what was saved.

        ``mmap``: map the stored vectors instead of reading them (read-only use: searches), so
        a cold process answers in milliseconds and pages in only what a search touches; such
        an index cannot be added to. Indexes whose tier is not ``mappable`` (fast-scan PQ) are
        read: FAISS copies their codes whichever way. A file whose checksum was verified before
        and whose size, inode and change time are what they were then is not hashed again
        (``chorus check`` always hashes).
        """
        json_path = cls.settings_path(folder, model)
        text = json_path.read_text()  # FileNotFoundError: no index
        try:
            settings = IndexSettings.from_json(text)
            paths = dict(
                zip(("index", "ids"), cls.data_paths(folder, model, settings.token), strict=True)
            )
        except (ValueError, TypeError) as err:
            raise IndexDamaged(f"{json_path.name} is unreadable ({err})") from None
        if sorted(settings.checksums) != sorted(paths):
            raise IndexDamaged("it has no checksums (made by an older Chorus)")
        for kind, path in paths.items():
            if mmap and _stamp(path) == _verified_stamps(folder, model, settings).get(kind):
                continue
            try:
                digest = file_sha256(path)
            except FileNotFoundError:
                raise IndexDamaged(f"{path.name} is missing") from None
            if digest != settings.checksums[kind]:
                raise IndexDamaged(f"{path.name} does not match its checksum")
            if mmap:
                _remember_verified(folder, model, settings, kind, path)
        try:
            ids = np.load(paths["ids"])
            in_place = mmap and settings.tier.mappable
            flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if in_place else 0
            index = faiss.read_index(str(paths["index"]), flags)
        except (ValueError, RuntimeError, OSError) as err:  # replaced while we read
            raise IndexDamaged(f"it could not be read ({str(err).splitlines()[0]})") from None
        if index.ntotal != len(ids) or len(ids) != settings.n_vectors:
            raise IndexDamaged(
                f"it holds {index.ntotal} vectors and {len(ids)} ids, "
                f"its settings say {settings.n_vectors}"
            )
        return cls(index, ids, settings)

    def save(self, folder: Path) -> None:
        """Write data files under a fresh token, then the settings that point at them.

        Readers open the settings first, so they always see one consistent generation;
        files of older generations are removed afterwards.
        """
        folder.mkdir(parents=True, exist_ok=True)
        model = self.settings.model
        self.settings.token = uuid.uuid4().hex[:TOKEN_CHARS]
        text = self.settings.to_json()  # fails before any file is written, not after
        index_path, ids_path = self.data_paths(folder, model, self.settings.token)
        atomic_write(index_path, lambda p: faiss.write_index(self.index, str(p)))
        atomic_write(ids_path, lambda p: _save_npy(p, self.ids))
        self.settings.checksums = {"index": file_sha256(index_path), "ids": file_sha256(ids_path)}
        text = self.settings.to_json()
        atomic_write(self.settings_path(folder, model), lambda p: Path(p).write_text(text))
        # the stable names <model>.index / <model>.ids.npy (position -> window_id) for tools that
        # open the index directly: hard links to this generation, so no copy of a large index
        for data, stable in zip(
            (index_path, ids_path), self.stable_paths(folder, model), strict=True
        ):
            atomic_write(stable, lambda p, data=data: _link_or_copy(data, Path(p)))
        _remove_stale_tmp(folder, model)
        keep = {index_path.name, ids_path.name}
        for old in _data_files(folder, model):
            if (
                old.name not in keep and _DATA_FILE.fullmatch(old.name)["token"]
            ):  # older generations
                old.unlink(missing_ok=True)

    # -- queries
    def search(
        self,
        q: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        params: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product for unit queries (m, dim): (scores (m, k), positions (m, k)).

        ``allowed``: optional bool mask (n,) over positions; missing hits are position -1.
        ``params``: search settings (``nprobe``, ``efSearch``, ``k_factor``) over the saved ones.
        """
        q = np.ascontiguousarray(q, np.float32).reshape(-1, self.settings.dim)  # (m, dim)
        k = int(min(k, len(self)))
        keep = []  # the selector reads this memory during the search
        sel = None
        frac = 1.0
        if allowed is not None:
            bits = np.packbits(np.asarray(allowed, bool), bitorder="little")  # (ceil(n/8),)
            keep.append(bits)
            sel = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bits))
            frac = max(float(np.count_nonzero(allowed)) / max(len(self), 1), 1e-6)
        settings = {**self.settings.params, **(params or {})}
        faiss_params = self.tier.search_params(self.index, settings, sel, k, frac)
        scores, pos = self.index.search(q, k, params=faiss_params)
        del keep
        return scores, pos

    def exact_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` like :meth:`search`, scoring every (allowed) stored vector.

        A FAISS exhaustive scan over the index's own full-precision copy (float32 or float16):
        ~17 ms per query at 100k x 1536 float16 on 2 cores, against ~0.8 s for streaming the
        table out of LanceDB. Only when ``exact_storage``.
        """
        if self._kernel is None:
            raise ValueError(f"index {self.settings.factory!r} keeps no exact vectors")
        q = np.ascontiguousarray(q, np.float32).reshape(-1, self.settings.dim)  # (m, dim)
        k = int(min(k, len(self)))
        if allowed is None:
            return self._kernel.search(q, k)
        bits = np.packbits(np.asarray(allowed, bool), bitorder="little")  # (ceil(n/8),)
        sel = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bits))
        scores, pos = self._kernel.search(q, k, params=faiss.SearchParameters(sel=sel))
        del bits  # the selector read this memory during the search
        return scores, pos

    def reconstruct(self, positions: np.ndarray) -> np.ndarray:
        """Stored vectors (m, dim) at ``positions`` (only when ``exact_storage``)."""
        positions = np.asarray(positions, np.int64)
        if not len(positions):
            return np.empty((0, self.settings.dim), np.float32)
        return self.index.reconstruct_batch(positions)


VERIFIED_MIN_AGE_S = 2.0  # a file changed this recently is always hashed (coarse ctime ticks)


def _stamp(path: Path) -> list | None:
    """(size, inode, change time ns) of a file: any write to it changes the change time."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_ino, st.st_ctime_ns]


def _verified_path(folder: Path, model: str) -> Path:
    return folder / f".{model}.verified.json"


def _verified_stamps(folder: Path, model: str, settings: IndexSettings) -> dict:
    """File kind -> stamp of the files of this generation whose checksums matched before."""
    try:
        data = json.loads(_verified_path(folder, model).read_text())
    except (OSError, ValueError):
        return {}
    same = isinstance(data, dict) and data.get("checksums") == settings.checksums
    return data.get("stamps", {}) if same and data.get("token") == settings.token else {}


def _remember_verified(folder: Path, model: str, settings: IndexSettings, kind: str, path) -> None:
    stamp = _stamp(path)
    if stamp is None or time.time_ns() - stamp[2] < VERIFIED_MIN_AGE_S * 1e9:
        return
    stamps = {**_verified_stamps(folder, model, settings), kind: stamp}
    text = json.dumps({"token": settings.token, "checksums": settings.checksums, "stamps": stamps})
    with contextlib.suppress(OSError):  # a read-only database is simply hashed every time
        atomic_write(_verified_path(folder, model), lambda p: Path(p).write_text(text))


class IndexDamaged(ValueError):
    """A saved index whose files do not match what was saved with it (the message says how)."""


HASH_BLOCK = 1 << 20  # bytes read per hash update


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _save_npy(path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array, allow_pickle=False)


STALE_TMP_S = 3600  # s: a temporary index file this old was left by a killed writer


def _remove_stale_tmp(folder: Path, model: str) -> None:
    """Remove ``atomic_write`` leftovers of a writer killed mid-write (full-size files);
    only old ones, so that another process's write in progress is left alone."""
    now = time.time()
    for path in folder.glob(f".{model}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_TMP_S:
                path.unlink()


def remove_index(folder: Path, model: str) -> None:
    """Delete an index: its settings first (readers then see none), then every data file."""
    AnnIndex.settings_path(folder, model).unlink(missing_ok=True)
    _verified_path(folder, model).unlink(missing_ok=True)
    for path in _data_files(folder, model):
        path.unlink(missing_ok=True)


# <model>[.<token>].index / .ids.npy: a generation's data files, or the stable links to them
_DATA_FILE = re.compile(
    rf"(?P<model>.+?)(\.(?P<token>[0-9a-f]{{{TOKEN_CHARS}}}))?\.(index|ids\.npy)"
)


def _data_files(folder: Path, model: str) -> list[Path]:
    """Every index data file of ``model`` in ``folder``, generations and stable links."""
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        m = _DATA_FILE.fullmatch(path.name)
        if m and m["model"] == model:
            found.append(path)
    return found


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


# ---------------------------------------------------------------------- build / update
def check_factory(factory: str, dim: int) -> None:
    """Raise ValueError for a factory string FAISS cannot build (``"auto"`` is always fine).

    Checked before an embed starts. The string is built with one IVF cell: FAISS allocates every
    cell's list up front (seconds and gigabytes for a mistyped ``IVF99999999``).
    """
    if factory == "auto":
        return
    cells = factory_cells(factory)
    if cells is not None and cells > IVF_MAX_CELLS:
        raise ValueError(
            f"bad FAISS factory string {factory!r}: {cells:,} IVF cells, more than the "
            f"{IVF_MAX_CELLS:,} Chorus builds (auto picks about 4 sqrt(windows))"
        )
    probe = factory.replace(f"IVF{cells}", "IVF1", 1) if cells is not None else factory
    _new_index(tier_for_factory(probe), dim, {})


def _new_index(tier: Tier, dim: int, params: dict) -> faiss.Index:
    try:
        index = faiss.index_factory(dim, tier.factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(
            f"bad FAISS factory string {tier.factory!r}: {str(e).splitlines()[-1]}"
        ) from None
    tier.configure(index, params)
    return index


def _check_trainable(nlist: int | None, n: int) -> None:
    if nlist is not None and n < nlist:  # k-means cannot place more centroids than points
        raise ValueError(
            f"an index with {nlist} IVF cells needs at least {nlist} windows to train, got {n}: "
            "use fewer cells, or factory='auto'"
        )


def _train(index: faiss.Index, snap, n: int) -> int:
    """Train on a fixed-seed random sample of the snapshot; return the sample size."""
    if index.is_trained:
        return 0
    nlist = getattr(base_index(index), "nlist", 1)
    size = int(min(n, max(TRAIN_POINTS_PER_CELL * nlist, 10_000), TRAIN_SAMPLE_MAX))
    offsets = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    index.train(snap.vectors_at(offsets))  # (size, dim)
    return size


def full_build(snap, model: str, tier: Tier, params: dict, auto: bool) -> AnnIndex:
    """Train (on a sample) and fill a fresh ``tier`` index with every vector of ``snap``."""
    t0 = time.perf_counter()
    n = len(snap)
    _check_trainable(factory_cells(tier.factory), n)  # before FAISS allocates the cells
    index = _new_index(tier, snap.dim, params)
    ids = []
    with tier.filling(index):
        trained_on = _train(index, snap, n)
        for batch_ids, vec in snap.iter_vectors():
            index.add(vec)  # (b, dim)
            ids.append(batch_ids)
    ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
    settings = IndexSettings(
        model=model,
        factory=tier.factory,
        dim=snap.dim,
        n_vectors=len(ids),
        table_version=snap.version,
        params={k: v for k, v in params.items() if k != "efConstruction"},
        auto=auto,
        trained_on=trained_on,
        built_n=len(ids),
        build_s=round(time.perf_counter() - t0, 3),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        tier=tier,
    )
    return AnnIndex(index, ids, settings)


BUILD_PARAMS = ("efSearch", "efConstruction", "nprobe", "k_factor", "float16")


def check_params(params: dict) -> dict:
    """Known build/search parameters as plain Python numbers (JSON), else one clear error."""
    unknown = sorted(set(params) - set(BUILD_PARAMS))
    if unknown:
        raise ValueError(f"unknown index parameter(s) {unknown}; known: {list(BUILD_PARAMS)}")
    out = {}
    for key, value in params.items():
        if key == "float16":
            out[key] = bool(value)
            continue
        number = float(value)
        if key == "k_factor":  # candidates re-ranked per hit wanted: at least one
            if not (math.isfinite(number) and number >= 1):
                raise ValueError(f"index parameter k_factor must be a number >= 1, got {value!r}")
            out[key] = number
        elif not (math.isfinite(number) and number >= 1 and number == int(number)):
            raise ValueError(f"index parameter {key} must be a positive integer, got {value!r}")
        else:
            out[key] = int(number)
    return out
