"""Index tiers: one small dataclass per kind of FAISS index Chorus builds.

A tier knows its FAISS factory string, its default search parameters, how to turn the stored
parameters into per-search FAISS parameters (widened for filtered searches), its build-time
knobs, and whether the index holds every vector exactly (then the index is also the exact
kernel). The tier is saved with the index (``IndexSettings.tier``); settings written before
tiers existed are read by :func:`tier_for_factory`, the one place a factory string is parsed.

Tiers (all on L2-normalised vectors with inner product):

=========  ======================================  =============================================
kind       factory (examples)                      search
=========  ======================================  =============================================
flat       ``SQfp16``, ``Flat``                    exhaustive, exact
hnsw       ``HNSW32,SQfp16``                       graph beam (``efSearch``)
ivf        ``IVF4096,PQ192x4fs,Refine(SQfp16)``    IVF cells (``nprobe``); with a refine stage
                                                   FAISS re-ranks ``k_factor`` x k exactly
lowmem     ``IVF1024,PQ192x4fs``,                  IVF-PQ codes only in RAM; the shortlist
           ``IVF4096_HNSW32,PQ192x4fs``            (``k_factor`` x k) is re-ranked exactly with
                                                   vectors read from the LanceDB table; from
                                                   4096 cells the centroids are searched by HNSW
=========  ======================================  =============================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Iterator
from typing import ClassVar

import faiss

HNSW_M = 32  # graph degree
HNSW_EF_CONSTRUCTION = 64  # build beam width
HNSW_EF_SEARCH = 128  # search beam width (recall@10 >= 0.95 on the benchmark)
IVF_CELLS_PER_SQRT_N = 4  # nlist ~ 4 sqrt(n), rounded to a power of two
IVF_NPROBE = 32  # cells visited per query
HNSW_QUANTIZER_MIN_CELLS = 4096  # from here (~0.5 M windows) the low-memory tier's centroids
QUANTIZER_EF_SEARCH = 64  # are searched by HNSW, with at least this efSearch (and >= nprobe)
QUANTIZER_EF_CONSTRUCTION = 80  # the centroid graph's build beam
IVF_KMEANS_ITERS = 10  # k-means iterations for the IVF quantizer (FAISS default 25)
# shortlist / k for the exact re-rank, by size (refine_k_factor): at 100k 16 gives recall@10
# 1.0 (8: 0.96); at 1M 32 gives 0.80, 64 0.96, 128 1.0 (benchmarks/RESULTS.md, "## Index")
REFINE_K_FACTOR = 128  # the 1M value, and the default of an explicit factory string
REFINE_K_FACTOR_MIN = 16
REFINE_K_FACTOR_BASE_N = 150_000  # k_factor doubles for each doubling of n beyond this
IVF_REGROW_FACTOR = 4  # rebuild an IVF index when the archive grew this much since training
EF_MAX = 4096  # cap on the boosted HNSW beam for filtered searches
# lowmem shortlist / k (each candidate is one row read from Lance): recall@10 0.97 at 2M (48:
# 0.91), and 32 gave 1.0 at 500k (16: 0.94): it doubles per 4x windows (lowmem_index_bench.py)
LOWMEM_K_FACTOR = 64
LOWMEM_K_FACTOR_BASE_N = 2_000_000
PQ_DIMS_PER_CODE = 8  # fast-scan PQ: one 4-bit code per 8 dimensions (d/16 bytes per vector)

# the storage part of a factory that keeps each vector exactly (float32) or as float16
_EXACT_STORAGE = {"Flat", "SQfp16"}
_REFINE = re.compile(r"^(RFlat|Refine\((?P<inner>.+)\))$")


def _grown_k_factor(n: int, k0: float, n0: int, per: int) -> float:
    """``k0`` up to ``n0`` vectors, doubling for each ``per``-fold growth of n beyond."""
    steps = max(0, math.ceil(math.log2(max(n, 1) / n0) / math.log2(per)))
    return float(k0 * 2**steps)


def refine_k_factor(n: int) -> float:
    """Re-rank shortlist multiple for an IVF-PQ index over ``n`` vectors: 16 up to 150k,
    doubling with each doubling of n (128 at 1M), capped at ``REFINE_K_FACTOR`` x 4."""
    grown = _grown_k_factor(n, REFINE_K_FACTOR_MIN, REFINE_K_FACTOR_BASE_N, 2)
    return min(grown, 4.0 * REFINE_K_FACTOR)


def in_place_k_factor(n: int) -> float:
    """Re-rank shortlist multiple of the codes-only tier when its shortlist is read from the
    table in place: 16 up to 150k, doubling for each 4x beyond (64 at 1M and 2M). Measured
    (1536-d clustered, nprobe 32): 1M 32 -> recall@10 0.947, 48 -> 0.999, 64 -> 1.000; 2M 64 ->
    0.968 (benchmarks/RESULTS.md). Each candidate costs one ``pread`` (~2 us)."""
    grown = _grown_k_factor(n, REFINE_K_FACTOR_MIN, REFINE_K_FACTOR_BASE_N, 4)
    return min(grown, 4.0 * REFINE_K_FACTOR)


def _coarse(cells: int) -> str:
    """The IVF part of a factory string: from ``HNSW_QUANTIZER_MIN_CELLS`` cells the centroids
    are searched through an HNSW graph, as a flat scan of them is most of a query's time (at
    4096 cells x 1536-d, 1.09 of 1.27 ms; 0.50 ms by HNSW at efSearch 64, the same recall)."""
    return f"IVF{cells}_HNSW32" if cells >= HNSW_QUANTIZER_MIN_CELLS else f"IVF{cells}"


_HNSW_PARAMS: dict[int, faiss.SearchParametersHNSW] = {}


def _hnsw_params(ef: int) -> faiss.SearchParametersHNSW:
    """Shared, never freed: FAISS's search parameters hold the quantizer's by a raw pointer."""
    if ef not in _HNSW_PARAMS:
        _HNSW_PARAMS[ef] = faiss.SearchParametersHNSW(efSearch=ef)
    return _HNSW_PARAMS[ef]


def ivf_cells(n: int) -> int:
    """IVF cell count for ``n`` vectors: ``IVF_CELLS_PER_SQRT_N`` sqrt(n), a power of two."""
    return 2 ** round(math.log2(IVF_CELLS_PER_SQRT_N * math.sqrt(max(n, 1))))


def _refine_part(parts: list[str]) -> str | None:
    """The refine component of a split factory string (``RFlat``, ``Refine(...)``) or None."""
    return next((p for p in parts if _REFINE.match(p)), None)


def base_index(index: faiss.Index) -> faiss.Index:
    """The index under a refine stage (or ``index`` itself), downcast."""
    return _unwrap(index)[0]


def _unwrap(index: faiss.Index) -> tuple[faiss.Index, faiss.Index | None]:
    """(base index, refine index or None) of a downcast FAISS index."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexRefine):
        return faiss.downcast_index(top.base_index), faiss.downcast_index(top.refine_index)
    return top, None


@dataclasses.dataclass(frozen=True)
class Tier:
    """What a kind of index is; subclasses set ``kind`` and override what differs.

    Parameters
    ----------
    factory : the FAISS ``index_factory`` string (metric: inner product).
    """

    factory: str
    kind: ClassVar[str] = ""

    @property
    def mappable(self) -> bool:
        """Does reading the index from a mapping (``IO_FLAG_MMAP_IFC``) leave its codes in the
        file? Not 4-bit fast-scan PQ (``x4fs``): FAISS copies those codes out whichever way, so
        mapping only added the file's pages to the resident memory (+107 MB at 1 M)."""
        return "x4fs" not in self.factory

    @property
    def exact_vectors(self) -> bool:
        """Does the index hold every vector exactly (float32 or float16)?"""
        return self.factory in _EXACT_STORAGE

    @property
    def exhaustive(self) -> bool:
        """Does a search score every vector (so ANN results are exact)?"""
        return False

    @property
    def rerank_from_table(self) -> bool:
        """Must the caller re-rank a ``k_factor`` x k shortlist with the table's vectors?"""
        return False

    def default_params(self) -> dict:
        """Search parameters of an index built from an explicit factory string."""
        return {}

    def params_for_size(self, n: int) -> dict:
        """Search parameters of this tier when chosen by size for ``n`` vectors."""
        return self.default_params()

    def configure(self, index: faiss.Index, params: dict) -> None:
        """Set build-time knobs on a freshly made ``index``."""

    @contextlib.contextmanager
    def filling(self, index: faiss.Index) -> Iterator[None]:
        """Around training ``index`` and adding every vector to it (a full build)."""
        yield

    def search_params(
        self, index: faiss.Index, params: dict, sel, k: int, frac: float
    ) -> faiss.SearchParameters:
        """Per-search FAISS parameters from the stored ``params``.

        ``sel``: an IDSelector or None; ``frac``: the allowed share of the index (1.0
        unfiltered), by which tiers that visit part of the index widen their search.
        """
        return faiss.SearchParameters(sel=sel)

    def exact_kernel(self, index: faiss.Index) -> faiss.Index | None:
        """The flat index inside ``index`` holding every vector exactly, or None."""
        return faiss.downcast_index(index) if self.exact_vectors else None

    def outgrown(self, n: int, built_n: int) -> bool:
        """Should an index built over ``built_n`` vectors be rebuilt now that there are ``n``?"""
        return False

    def shortlist(self, k: int, params: dict) -> int:
        """How many candidates to ask the index for when ``rerank_from_table``."""
        return k

    def to_dict(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class FlatTier(Tier):
    """Exhaustive scan: exact, 2*d bytes/vector as float16 (``SQfp16``) or 4*d (``Flat``)."""

    factory: str = "SQfp16"
    kind: ClassVar[str] = "flat"

    @classmethod
    def for_size(cls, n: int, dim: int, float16: bool = True) -> FlatTier:
        return cls("SQfp16" if float16 else "Flat")

    @property
    def exhaustive(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class HnswTier(Tier):
    """HNSW graph over stored vectors: graph search, vectors kept (exact when Flat/SQfp16)."""

    factory: str = f"HNSW{HNSW_M},SQfp16"
    kind: ClassVar[str] = "hnsw"

    @classmethod
    def for_size(cls, n: int, dim: int, float16: bool = True) -> HnswTier:
        return cls(f"HNSW{HNSW_M},{'SQfp16' if float16 else 'Flat'}")

    @property
    def exact_vectors(self) -> bool:
        parts = self.factory.split(",")
        return len(parts) == 1 or parts[1] in _EXACT_STORAGE  # "HNSW32" stores Flat

    def default_params(self) -> dict:
        return {"efSearch": HNSW_EF_SEARCH}

    def configure(self, index: faiss.Index, params: dict) -> None:
        base, _ = _unwrap(index)
        base.hnsw.efConstruction = int(params.get("efConstruction", HNSW_EF_CONSTRUCTION))

    def search_params(self, index, params, sel, k, frac):
        ef = max(int(params.get("efSearch", HNSW_EF_SEARCH)), k)
        ef = int(min(max(ef / frac, ef), EF_MAX))  # filtered: widen the beam
        return faiss.SearchParametersHNSW(efSearch=ef, sel=sel)

    def exact_kernel(self, index):
        return faiss.downcast_index(_unwrap(index)[0].storage) if self.exact_vectors else None


@dataclasses.dataclass(frozen=True)
class IvfTier(Tier):
    """IVF cells (``nprobe`` visited per query); with a refine stage (``RFlat``,
    ``Refine(SQfp16)``) FAISS re-ranks a ``k_factor`` x k shortlist with the stored vectors."""

    factory: str = "IVF1024,Flat"
    kind: ClassVar[str] = "ivf"

    @classmethod
    def for_size(cls, n: int, dim: int, float16: bool = True) -> IvfTier:
        refine = "Refine(SQfp16)" if float16 else "RFlat"
        if dim % PQ_DIMS_PER_CODE == 0:
            coarse = f"IVF{ivf_cells(n)},PQ{dim // PQ_DIMS_PER_CODE}x4fs"
        else:  # fast-scan PQ needs d divisible by the sub-quantizer count
            coarse = f"IVF{ivf_cells(n)},SQ8"
        return cls(f"{coarse},{refine}")

    @property
    def refined(self) -> bool:
        return _refine_part(self.factory.split(",")) is not None

    @property
    def exact_vectors(self) -> bool:
        part = _refine_part(self.factory.split(","))
        if part is None:
            return False
        inner = _REFINE.match(part)["inner"]
        return inner is None or inner in _EXACT_STORAGE

    def default_params(self) -> dict:
        params = {"nprobe": IVF_NPROBE}
        if self.refined:
            params["k_factor"] = REFINE_K_FACTOR
        return params

    def params_for_size(self, n: int) -> dict:
        return {"nprobe": IVF_NPROBE, "k_factor": refine_k_factor(n)}

    def configure(self, index: faiss.Index, params: dict) -> None:
        base = _unwrap(index)[0]
        base.cp.niter = IVF_KMEANS_ITERS
        quantizer = faiss.downcast_index(base.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efConstruction = QUANTIZER_EF_CONSTRUCTION
            quantizer.hnsw.efSearch = QUANTIZER_EF_SEARCH  # what later add()s assign with

    @contextlib.contextmanager
    def filling(self, index: faiss.Index) -> Iterator[None]:
        """A full build assigns with a flat quantizer, then puts the centroids in the HNSW
        graph the searches use. Through the graph, FAISS's default efSearch (16) put vectors
        in cells not their nearest (1 M: recall@10 0.980 against 1.000), and efSearch 64 made
        the build 1.7x slower."""
        base = _unwrap(index)[0]
        graph = faiss.downcast_index(base.quantizer)
        if not isinstance(graph, faiss.IndexHNSW) or base.is_trained:
            yield
            return
        flat = faiss.IndexFlat(base.d, base.metric_type)
        trains_alone = base.quantizer_trains_alone
        base.quantizer, base.quantizer_trains_alone = flat, 0  # the graph stays owned by base
        try:
            yield
            graph.add(flat.reconstruct_n(0, flat.ntotal))  # (nlist, d) centroids
        finally:
            base.quantizer, base.quantizer_trains_alone = graph, trains_alone

    def search_params(self, index, params, sel, k, frac):
        base, refine = _unwrap(index)
        nprobe = int(params.get("nprobe", IVF_NPROBE))
        nprobe = int(min(max(nprobe / frac, nprobe), base.nlist))  # filtered: more cells
        ivf = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
        if isinstance(faiss.downcast_index(base.quantizer), faiss.IndexHNSW):
            ivf.quantizer_params = _hnsw_params(max(QUANTIZER_EF_SEARCH, nprobe))
        if refine is None:
            return ivf
        return faiss.IndexRefineSearchParameters(
            k_factor=float(params.get("k_factor", REFINE_K_FACTOR)), base_index_params=ivf
        )

    def exact_kernel(self, index):
        return _unwrap(index)[1] if self.exact_vectors else None

    def outgrown(self, n: int, built_n: int) -> bool:
        return n > IVF_REGROW_FACTOR * max(built_n, 1)  # too few cells for the archive now


@dataclasses.dataclass(frozen=True)
class LowMemTier(IvfTier):
    """IVF with product-quantised codes only (fast-scan PQ, d/16 bytes a vector in RAM): the
    caller re-ranks a ``k_factor`` x k shortlist exactly with vectors read from the table, so
    resident memory is the codes plus the ids, not the vectors."""

    factory: str = "IVF4096,PQ192x4fs"
    kind: ClassVar[str] = "lowmem"

    @classmethod
    def for_size(cls, n: int, dim: int, float16: bool = True) -> LowMemTier:
        if dim % PQ_DIMS_PER_CODE:
            raise ValueError(f"the low-memory tier needs d divisible by {PQ_DIMS_PER_CODE}")
        return cls(f"{_coarse(ivf_cells(n))},PQ{dim // PQ_DIMS_PER_CODE}x4fs")

    @property
    def rerank_from_table(self) -> bool:
        return True

    def default_params(self) -> dict:
        return {"nprobe": IVF_NPROBE, "k_factor": LOWMEM_K_FACTOR}

    def params_for_size(self, n: int) -> dict:
        k_factor = _grown_k_factor(n, LOWMEM_K_FACTOR, LOWMEM_K_FACTOR_BASE_N, 4)
        return {"nprobe": IVF_NPROBE, "k_factor": k_factor}

    def shortlist(self, k: int, params: dict) -> int:
        return max(k, math.ceil(k * float(params.get("k_factor", LOWMEM_K_FACTOR))))


TIERS = {cls.kind: cls for cls in (FlatTier, HnswTier, IvfTier, LowMemTier)}


def factory_cells(factory: str) -> int | None:
    """The IVF cell count a factory string names (``"IVF1024,PQ..."`` -> 1024), else None."""
    m = re.match(r"IVF(\d+)", factory.split(",")[0].upper())
    return int(m[1]) if m else None


def tier_for_factory(factory: str) -> Tier:
    """The tier of a FAISS factory string (an explicit ``--index``, or settings saved before
    tiers were): ``HNSW…`` hnsw; ``IVF…`` with product quantisation and no refine stage
    lowmem (its re-rank reads the table); other ``IVF…`` ivf; anything else flat."""
    parts = factory.split(",")
    head = parts[0].upper()
    if head.startswith("HNSW"):
        return HnswTier(factory)
    if head.startswith("IVF"):
        pq = len(parts) > 1 and parts[1].startswith("PQ")
        if pq and _refine_part(parts) is None:
            return LowMemTier(factory)
        return IvfTier(factory)
    return FlatTier(factory)


def tier_from_dict(data: dict) -> Tier:
    """Inverse of :meth:`Tier.to_dict`; ValueError for an unknown kind."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in TIERS:
        raise ValueError(f"unknown index tier {kind!r}; known: {sorted(TIERS)}")
    return TIERS[kind](**data)
