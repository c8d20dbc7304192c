"""Read a Lance table's vector column in place from its data files: no second copy.

Lance (file format 2.1 and later) writes a fixed-size-list vector column of more than 128 bytes
a row, without nulls, as "full-zip" pages of flat values: each page is one contiguous buffer of
``rows x dim`` float16 or float32 values (smaller vectors go into chunked mini-blocks, which are
read through ``take``). :class:`VectorView` reads those buffers in place, so the exact re-rank of
an ANN shortlist and exhaustive scans read vectors straight from the table's own files: the table
stays the only copy of the vectors on disk.

- Scattered rows (a shortlist) are read with ``pread``, in file order, so the page cache is not
  mapped into the process: with large page-cache folios, touching one mapped row maps up to
  megabytes (640 rows: +610 MB resident).
- Exact scans map each page once and keep it mapped while the view lives (within a quarter of
  the RAM): mapping and unmapping a 30 MB page costs as much as scanning it. float16 pages are
  scanned by SimSIMD (USearch's kernels, AVX2/AVX-512/NEON chosen at run time) against the
  float16-rounded query, and the rows that rounding could misplace are re-scored with the
  float32 query by FAISS, so results equal FAISS's own float16 scan, which would first need a
  copy of every page (50 ms at 100 k against 13 ms; ``benchmarks/RESULTS.md``).
- Streams over every vector (index builds, scoring) map a page per call and unmap it after.

The layout comes from Lance's public metadata (:mod:`index.vector_layout`) and is trusted only
when every page has the plain layout and sampled rows of every page equal what
``LanceDataset.take`` returns for them. Anything else (older file formats, compression, nulls, a
remote store) makes :func:`open_view` return None, and callers read through ``take``. A view
holds at most ``OPEN_FILES_MAX`` files open (a quarter of the descriptor limit), and as many
kept mappings, and releases them when it is dropped (a new table version makes a new view), so
files that Lance's cleanup removes are released.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import mmap
import os
import threading
from collections.abc import Iterator

import faiss
import numpy as np

from .vector_layout import VECTOR_COLUMN, Page, read_layout, stored_layout

try:  # SimSIMD: float16 dot products over the mapped pages in place (USearch's kernels)
    import simsimd
except ImportError:  # pragma: no cover - a platform without its wheel scans through FAISS
    simsimd = None

SAMPLES_PER_PAGE = 4  # rows of each page compared with ``take`` before the view is trusted
STORED_ROWS_SAMPLED = 32  # rows compared again for a stored layout (checked when stored)
PREAD_SHARE = 32  # a page is mapped for a gather of at least 1/PREAD_SHARE of its rows
# stored vectors are unit length or zero (``rows.normalise``); float16 rounding adds < 0.1 %
NORM_BOUND = 1.01
SIMD_MIN_ELEMENTS = 1 << 20  # a page with more values than this is scanned on every thread
RESCORE_ROWS = 16_384  # candidates re-scored at a time (50 MB at 1536-d float16)


def _open_files_max() -> int:
    """Data files a view keeps open at once: a quarter of this process's descriptor limit
    (256 of Linux's usual 1024, 64 of macOS's 256), at most 1024."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return 64
    if soft == resource.RLIM_INFINITY:
        return 1024
    return int(max(16, min(1024, soft // 4)))


OPEN_FILES_MAX = _open_files_max()


def _kept_bytes_max() -> int:
    """Bytes of pages an exact scan keeps mapped between searches: a quarter of the RAM."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return 1 << 30


KEPT_BYTES_MAX = _kept_bytes_max()
# Per-thread buffers a shortlist is read and scored in, kept between searches up to this size:
# fresh multi-megabyte buffers come from new pages (glibc maps and unmaps them), and filling
# them page-faults: a 1 M-window ANN search took 6.0 ms p50 instead of 3.0
SCRATCH_BYTES_MAX = 16 << 20
SPLIT_READS_MIN = 256  # rows read one by one from which a second thread reads half of them
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
_reader: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, its worker)
_reader_lock = threading.Lock()


def _second_reader() -> concurrent.futures.ThreadPoolExecutor | None:
    """This process's one worker thread for reads (None on a one-core machine). Made per
    process: a forked child inherits the executor but not its thread, and would wait forever."""
    global _reader
    if (_CORES or 1) < 2:
        return None
    with _reader_lock:
        if _reader is None or _reader[0] != os.getpid():
            worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chorus-read")
            _reader = (os.getpid(), worker)
        return _reader[1]


class VectorView:
    """The vectors of one snapshot of an embeddings table, read from its data files.

    Rows are addressed by snapshot offset (position in scan order). Physical rows (every row
    of every data page, deleted ones too) are numbered page by page, fragment by fragment.

    Parameters
    ----------
    pages : the vector column's data pages in physical order.
    dim : the vector length.
    row_addr : (n,) uint64, the Lance row address of each snapshot offset.
    fragments : [(fragment id, its page count)] in physical order.

    The maps between offsets and physical rows (``phys_of_off`` (n,), ``off_of_phys`` (P,),
    -1 where deleted) are built on first use: a shortlist reads only its own rows' addresses.
    """

    def __init__(self, pages: list[Page], dim: int, row_addr, fragments):
        self.pages = pages
        self.fragments = list(fragments)  # [(fragment id, its page count)] in physical order
        self.root = ""  # the table's folder (set by open_view)
        self.dim = int(dim)
        self.page_start = np.cumsum([0] + [p.rows for p in pages])[:-1]  # (pages,) physical
        self.n_phys = sum(p.rows for p in pages)
        self._positions = np.array([p.position for p in pages], np.int64)  # (pages,) bytes
        self.row_addr = np.asarray(row_addr, np.uint64)  # (n,)
        base = {}  # fragment id -> its first physical row, its physical rows
        rows = {}
        it = iter(pages)
        for frag_id, n in self.fragments:
            base[frag_id] = sum(rows.values())
            rows[frag_id] = sum(next(it).rows for _ in range(n))
        self._first = np.full(max(base, default=-1) + 2, -1, np.int64)  # (F,), -1: unknown
        self._rows_in = np.zeros(len(self._first), np.int64)
        self._first[list(base)] = list(base.values())
        self._rows_in[list(rows)] = list(rows.values())
        self._phys_of_off: np.ndarray | None = None
        self._off_of_phys: np.ndarray | None = None
        self.dtype = np.dtype(pages[0].dtype if pages else np.float32)
        self._files: collections.OrderedDict = collections.OrderedDict()  # path -> file (LRU)
        self._files_lock = threading.Lock()
        self._kept: dict[int, np.ndarray] = {}  # page -> its array over a kept mapping
        self._kept_bytes = 0
        self._all_fds: tuple[np.ndarray, list] | None = None  # see _fds
        self._scratch = threading.local()  # see SCRATCH_BYTES_MAX

    def _phys(self, addr: np.ndarray) -> np.ndarray:
        """Physical rows (m,) of row addresses (m,); ValueError for one the pages do not hold."""
        frag_id = np.minimum(addr >> np.uint64(32), len(self._first) - 1).astype(np.int64)
        row = (addr & np.uint64(0xFFFFFFFF)).astype(np.int64)
        if len(addr) and (
            (self._first[frag_id] < 0).any() or (row >= self._rows_in[frag_id]).any()
        ):
            raise ValueError("a row address is outside the vector column's pages")
        return self._first[frag_id] + row

    @property
    def phys_of_off(self) -> np.ndarray:
        if self._phys_of_off is None:
            self._phys_of_off = self._phys(self.row_addr)
        return self._phys_of_off

    @property
    def off_of_phys(self) -> np.ndarray:
        if self._off_of_phys is None:
            off_of_phys = np.full(self.n_phys, -1, np.int64)
            off_of_phys[self.phys_of_off] = np.arange(len(self.row_addr))
            self._off_of_phys = off_of_phys
        return self._off_of_phys

    def phys_at(self, offsets) -> np.ndarray:
        """Physical rows (m,) of snapshot ``offsets``."""
        offsets = np.asarray(offsets, np.int64).ravel()
        if self._phys_of_off is not None:
            return self._phys_of_off[offsets]
        return self._phys(self.row_addr[offsets])

    def layout(self) -> dict:
        """The pages as plain data, to open this view again without reading every data
        file's metadata (``open_view(..., layout=)``); paths relative to the table."""
        pages = iter(self.pages)
        frags = [
            [frag_id, [next(pages).as_row(self.root) for _ in range(n)]]
            for frag_id, n in self.fragments
        ]
        return {"dim": self.dim, "fragments": frags}

    def _file(self, path: str):
        """An open, unbuffered ``path`` from this view's LRU; an evicted file closes once the
        callers still reading it drop it."""
        with self._files_lock:
            file = self._files.get(path)
            if file is not None:
                self._files.move_to_end(path)
                return file
            file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by the LRU and GC)
            self._files[path] = file
            while len(self._files) > OPEN_FILES_MAX:
                self._files.popitem(last=False)
            return file

    @contextlib.contextmanager
    def _mapped(self, p: int, whole: bool = True) -> Iterator[np.ndarray]:
        """Page ``p`` as a read-only (rows, dim) array over a mapping made for this call and
        unmapped after it; ``whole``: ask the kernel to read the whole page ahead."""
        mapped, array = self._map(p, self._file(self.pages[p].path).fileno())
        if whole and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
            mapped.madvise(mmap.MADV_WILLNEED)
        try:
            yield array
        finally:
            del array
            with contextlib.suppress(BufferError):  # a caller kept a view: GC unmaps it later
                mapped.close()

    @contextlib.contextmanager
    def _scanned(self, p: int) -> Iterator[np.ndarray]:
        """Page ``p`` for an exact scan: mapped once and kept while the view lives, within
        ``KEPT_BYTES_MAX`` bytes and ``OPEN_FILES_MAX`` mappings (each holds a descriptor, so
        a view holds at most half the descriptor limit).
        Mapping and unmapping a 30 MB page costs ~2 ms, as much as scanning it; the kept
        pages are the table's file pages in the page cache, which the kernel can reclaim."""
        with self._files_lock:  # mapping is cheap (no page is read): done under the lock
            kept = self._kept.get(p)
            if kept is None:
                kept = self._keep(p)
        if kept is not None:
            yield kept
            return
        with self._mapped(p) as arr:
            yield arr

    def _keep(self, p: int) -> np.ndarray | None:
        """Map page ``p`` for the view's life if the budget allows (caller holds the lock)."""
        size = self.pages[p].rows * self.dim * self.dtype.itemsize
        if self._kept_bytes + size > KEPT_BYTES_MAX or len(self._kept) >= OPEN_FILES_MAX:
            return None
        with open(self.pages[p].path, "rb", buffering=0) as file:  # the mapping keeps its own
            self._kept[p] = self._map(p, file.fileno())[1]  # unmapped with the view
        self._kept_bytes += size
        return self._kept[p]

    def _map(self, p: int, fileno: int) -> tuple[mmap.mmap, np.ndarray]:
        """(a read-only mapping of page ``p`` of open file ``fileno``, the page over it as a
        (rows, dim) array)."""
        page = self.pages[p]
        start = page.position - page.position % mmap.ALLOCATIONGRANULARITY
        length = page.position - start + page.rows * self.dim * self.dtype.itemsize
        mapped = mmap.mmap(fileno, length, access=mmap.ACCESS_READ, offset=start)
        array = np.frombuffer(mapped, page.dtype, page.rows * self.dim, page.position - start)
        return mapped, array.reshape(page.rows, self.dim)

    def rows(self, offsets) -> np.ndarray:
        """Vectors (m, dim) float32 at snapshot ``offsets``, in the given order."""
        return _to_float32(self._raw_at(offsets))

    def scores(self, offsets, q: np.ndarray) -> np.ndarray:
        """Inner products (m,) of the rows at snapshot ``offsets`` with one query ``q`` (dim,);
        NaN for a row FAISS cannot score (a damaged vector holding NaN or infinity)."""
        phys = self.phys_at(offsets)
        scratch = self._scratch
        if len(phys) * self.dim * self.dtype.itemsize > SCRATCH_BYTES_MAX // 2:
            return _fp16_scores(self._raw(phys), q)
        if getattr(scratch, "rows", None) is None or len(scratch.rows) < len(phys):
            scratch.rows = np.empty((max(len(phys), 1024), self.dim), self.dtype)
            scratch.index = _fp16_index(scratch.rows[:0])
        return _fp16_scores(self._raw(phys, scratch.rows[: len(phys)]), q, scratch.index)

    def _raw_at(self, offsets) -> np.ndarray:
        """Stored vectors (m, dim), as stored, at snapshot ``offsets``."""
        return self._raw(self.phys_at(offsets))

    def _raw(self, phys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Stored vectors (m, dim), as stored (float16 or float32), at physical rows ``phys``;
        into ``out`` (m, dim) where given."""
        if out is None:
            out = np.empty((len(phys), self.dim), self.dtype)
        if not len(phys):
            return out
        page = np.searchsorted(self.page_start, phys, side="right") - 1  # (m,)
        row_bytes = self.dim * self.dtype.itemsize
        by_page = np.bincount(page, minlength=len(self.pages))  # (pages,) rows asked of each
        mapped = by_page * PREAD_SHARE >= np.diff(np.append(self.page_start, self.n_phys))
        if not hasattr(os, "preadv"):
            mapped[:] = True
        mapped[list(self._kept)] = True  # pages an exact scan keeps mapped: no syscalls
        for p in np.flatnonzero(mapped & (by_page > 0)).tolist():  # a large share of a page
            sel = np.flatnonzero(page == p)
            with self._scanned(p) if p in self._kept else self._mapped(p, whole=False) as arr:
                out[sel] = arr[phys[sel] - self.page_start[p]]
        sel = np.flatnonzero(~mapped[page])  # the rest: one pread a row, in file order
        if len(sel):
            self._pread_rows(out, sel, page[sel], phys[sel], row_bytes)
        return out

    def _fds(self, used: list[int]) -> tuple[np.ndarray, list]:
        """(descriptor of each page (pages,), the open files behind those of ``used``). Where
        the view's files fit ``OPEN_FILES_MAX`` they are opened once and kept."""
        if self._all_fds is not None:
            return self._all_fds
        keep = len({pg.path for pg in self.pages}) <= OPEN_FILES_MAX
        pages = self.pages if keep else [self.pages[p] for p in used]
        files = {pg.path: self._file(pg.path) for pg in pages}
        fd_of = np.array([files[pg.path].fileno() if pg.path in files else -1 for pg in self.pages])
        got = fd_of, list(files.values())
        if keep:
            self._all_fds = got
        return got

    def _pread_rows(self, out, sel, page, phys, row_bytes: int) -> None:
        """Read rows ``phys`` (of pages ``page``) into ``out[sel]`` with one ``preadv`` each;
        a long list in two threads (``preadv`` lets go of the GIL: 2.6 instead of 3.0 ms for a
        640-row shortlist at 1 M windows, benchmarks/RESULTS.md)."""
        fd_of, _held = self._fds(np.unique(page).tolist())  # files held while reading
        starts = self._positions[page] + (phys - self.page_start[page]) * row_bytes  # (r,)
        order = np.lexsort((starts, page))  # file order: neighbours share cache lines
        flat = memoryview(out.reshape(-1).view(np.uint8))
        dst = (sel[order] * row_bytes).tolist()
        fds, pos = fd_of[page[order]].tolist(), starts[order].tolist()
        reader = _second_reader() if len(dst) >= SPLIT_READS_MIN else None
        half = len(dst) // 2 if reader is not None else len(dst)
        other = None
        if reader is not None:
            other = reader.submit(_preads, flat, row_bytes, dst[half:], fds[half:], pos[half:])
        _preads(flat, row_bytes, dst[:half], fds[:half], pos[:half])
        if other is not None:
            other.result()

    def iter_rows(self, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (snapshot offsets (b,), vectors (b, dim) float32) over every row in scan order."""
        for p, start in enumerate(self.page_start):
            offs = self.off_of_phys[start : start + self.pages[p].rows]
            with self._mapped(p) as page:
                for lo in range(0, len(page), batch_rows):
                    part = offs[lo : lo + batch_rows]
                    live = part >= 0
                    if live.any():  # copies: nothing yielded points into the mapping
                        yield part[live], _to_float32(page[lo : lo + batch_rows][live])

    def exact_top(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product over every (allowed) row, page by page.

        Parameters
        ----------
        q : (m, dim) float32 unit queries.
        allowed : optional bool mask (n,) over snapshot offsets.

        Returns
        -------
        scores (m, k') float32 and snapshot offsets (m, k') int64, best first, k' <= k.
        """
        q = np.ascontiguousarray(q, np.float32).reshape(-1, self.dim)  # (m, dim)
        live = self.off_of_phys >= 0  # (P,)
        if allowed is not None:
            live &= allowed[np.maximum(self.off_of_phys, 0)]
        n_live = int(np.count_nonzero(live))
        if self.dtype == np.float16 and simd_status() is None and 2 * n_live >= len(live):
            return self._simd_top(q, k, live)
        scores, offsets = [], []
        for p, start in enumerate(self.page_start):
            offs = self.off_of_phys[start : start + self.pages[p].rows]  # (rows,)
            ok = live[start : start + self.pages[p].rows]
            count = int(np.count_nonzero(ok))
            if not count:
                continue
            with self._scanned(p) as page:
                s, i = _scan_page(page, q, min(k, count), None if count == len(ok) else ok)
            scores.append(s)
            offsets.append(np.where(i >= 0, offs[np.maximum(i, 0)], -1))
        if not scores:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        s = np.concatenate(scores, axis=1)  # (m, pages * k)
        o = np.concatenate(offsets, axis=1)
        s = np.where(o >= 0, s, -np.inf)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]  # (m, k)
        return np.take_along_axis(s, top, 1), np.take_along_axis(o, top, 1)

    def _simd_top(self, q: np.ndarray, k: int, live: np.ndarray):
        """:meth:`exact_top` over float16 pages scanned in place by SimSIMD, with one selection
        over the whole table (``live``: (P,) rows that may be returned)."""
        q16, slack = _rounded(q)
        threads = faiss.omp_get_max_threads()
        approx = np.full((len(q), self.n_phys), -np.inf, np.float32)  # (m, P)
        for p, start in enumerate(self.page_start.tolist()):
            end = start + self.pages[p].rows
            if live[start:end].any():
                with self._scanned(p) as page:
                    approx[:, start:end] = _cdist(q16, page, threads)
        approx[:, ~live] = -np.inf
        scores = np.full((len(q), k), -np.inf, np.float32)
        offsets = np.full((len(q), k), -1, np.int64)
        for j, a in enumerate(approx):
            s, phys = _rescored_top(a, slack[j], k, q[j], self._raw)
            scores[j, : len(s)] = s
            offsets[j, : len(s)] = self.off_of_phys[phys]
        return scores, offsets


def _preads(flat: memoryview, row_bytes: int, dst: list, fds: list, pos: list) -> None:
    """``preadv`` each row of file ``fds[i]`` at ``pos[i]`` into ``flat[dst[i]:]``."""
    preadv = os.preadv
    for i, fd, start in zip(dst, fds, pos, strict=True):
        if preadv(fd, [flat[i : i + row_bytes]], start) != row_bytes:
            raise OSError("a data file is shorter than its metadata says")


def _fp16_scores(raw: np.ndarray, q: np.ndarray, index: faiss.Index | None = None) -> np.ndarray:
    """Inner products (m,) float32 of stored rows ``raw`` (m, dim) with ``q`` (dim,), by FAISS's
    float16 kernel for float16 rows (no float32 copy); NaN where a row holds NaN or infinity.
    ``index``: a :func:`_fp16_index` to refill (its codes' memory is reused)."""
    if not len(raw):
        return np.empty(0, np.float32)
    q = np.ascontiguousarray(q, np.float32).reshape(1, raw.shape[1])
    if raw.dtype != np.float16:
        return raw @ q[0]
    s, i = _fp16_index(raw, index).search(q, len(raw))
    out = np.full(len(raw), np.nan, np.float32)
    scored = i[0] >= 0  # FAISS leaves rows it cannot order out (label -1)
    out[i[0][scored]] = s[0][scored]
    return out


def _fp16_index(vectors: np.ndarray, index: faiss.Index | None = None) -> faiss.Index:
    """A FAISS float16 flat index holding ``vectors`` (m, dim) float16: their bytes are its
    ``SQfp16`` codes, so filling it is one copy and its scan runs FAISS's float16 kernel.
    ``index``: one made here before, emptied and refilled (``reset`` keeps its codes' memory)."""
    m, d = vectors.shape
    if index is None:
        qt, ip = faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexScalarQuantizer(d, qt, ip)
    index.reset()
    index.add_sa_codes(np.ascontiguousarray(vectors).view(np.uint8).reshape(m, 2 * d))
    return index


def _to_float32(raw: np.ndarray) -> np.ndarray:
    """(m, dim) float32 of stored vectors; FAISS decodes float16 ~3x faster than NumPy's cast."""
    if raw.dtype != np.float16 or not len(raw):
        return np.array(raw, np.float32)  # a copy: ``raw`` may point into a mapping
    return faiss.ScalarQuantizer(raw.shape[1], faiss.ScalarQuantizer.QT_fp16).decode(
        raw.view(np.uint8)
    )


def simd_status() -> str | None:
    """Why float16 exact scans go through FAISS instead of SimSIMD here, or None if they don't."""
    if simsimd is None:
        return "simsimd is not installed"
    if not _simd_kernels():
        return "simsimd has no SIMD kernel for this CPU"
    return None


@functools.cache
def _simd_kernels() -> bool:
    return any(on for name, on in simsimd.get_capabilities().items() if name != "serial")


def _scan_page(page: np.ndarray, q: np.ndarray, k: int, ok: np.ndarray | None):
    """Exhaustive scan of one mapped page, or of its rows where ``ok``: (scores (m, k), page
    rows (m, k)), -1 where fewer rows could be ranked. float32 pages, and float16 pages where
    SimSIMD runs, are scanned in place; elsewhere FAISS scans a float16 copy. A filter keeping
    few rows (one site in 20) copies only those."""
    simd = page.dtype == np.float16 and simd_status() is None
    if simd and (ok is None or 2 * np.count_nonzero(ok) >= len(ok)):
        return _simd_scan(page, q, k, ok)  # in place; rows outside ``ok`` masked after
    rows = None if ok is None else np.flatnonzero(ok)
    if rows is not None:
        page = page[rows]  # (r, dim), a copy of the allowed rows only
    if simd:
        s, i = _simd_scan(page, q, k, None)
    elif page.dtype == np.float16:
        s, i = _fp16_index(page).search(q, k)
    else:  # float32: FAISS reads the page where it lies
        s, i = faiss.knn(q, page, k, faiss.METRIC_INNER_PRODUCT)
    if rows is not None:
        i = np.where(i >= 0, rows[np.maximum(i, 0)], -1)
    return s, i


def _cdist(q16: np.ndarray, page: np.ndarray, threads: int) -> np.ndarray:
    """SimSIMD's dot products (m, rows) float32 on ``threads`` threads. SimSIMD sets the
    calling thread's OpenMP thread count to ``threads`` (FAISS shares it: one call with 1 left
    every later FAISS search on one thread); the caller's count is put back."""
    before = faiss.omp_get_max_threads()
    try:
        return np.asarray(simsimd.cdist(q16, page, "dot", out_dtype="float32", threads=threads))
    finally:
        faiss.omp_set_num_threads(before)


def _simd_scan(page: np.ndarray, q: np.ndarray, k: int, ok: np.ndarray | None):
    """Top-``k`` of one float16 page (r, dim) read in place, rows outside ``ok`` left out:
    (scores (m, k), page rows (m, k)), -1 / -inf where fewer rows could be ranked."""
    q16, slack = _rounded(q)
    threads = faiss.omp_get_max_threads() if page.size >= SIMD_MIN_ELEMENTS else 1
    approx = _cdist(q16, page, threads)  # (m, r)
    if ok is not None:
        approx[:, ~ok] = -np.inf
    scores = np.full((len(q), k), -np.inf, np.float32)
    rows = np.full((len(q), k), -1, np.int64)
    for j, a in enumerate(approx):
        s, got = _rescored_top(a, slack[j], k, q[j], lambda r: page[r])
        scores[j, : len(s)] = s
        rows[j, : len(s)] = got
    return scores, rows


def _rounded(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the float16 queries SimSIMD scans with (m, dim), slack (m,)): rounding a query moves a
    unit row's score by at most |q - fp16(q)|, so a row whose rounded score is within twice
    that of the k-th may belong to the exact top k."""
    q16 = q.astype(np.float16)  # (m, dim)
    # 1e-5 covers float32 summation in either kernel (~1e-6 for unit rows at 1536-d)
    slack = 2 * NORM_BOUND * np.linalg.norm(q - q16.astype(np.float32), axis=1) + 1e-5
    return q16, slack


def _rescored_top(approx: np.ndarray, slack: float, k: int, q: np.ndarray, rows_of):
    """Exact top-``k`` of one query from its SimSIMD scores ``approx`` (r,), -inf where not
    allowed: every row within ``slack`` of the k-th approximate score is re-scored with the
    float32 query ``q`` (dim,) by FAISS, ``rows_of(indices)`` giving the stored rows, in
    chunks (a full ranking re-scores every row). So the result equals FAISS's float16 scan.

    Returns (scores (k',), indices into ``approx`` (k',)), best first; a damaged row (NaN or
    infinity) is never returned."""
    a = np.where(np.isnan(approx), -np.inf, approx)
    kk = min(k, int(np.count_nonzero(a > -np.inf)))
    if not kk:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    kth = -np.partition(-a, kk - 1)[kk - 1]
    cand = np.flatnonzero(a >= kth - slack)  # (c,), c >= kk
    exact = np.concatenate(
        [
            _fp16_scores(rows_of(cand[lo : lo + RESCORE_ROWS]), q)
            for lo in range(0, len(cand), RESCORE_ROWS)
        ]
    )  # (c,)
    ranked = np.flatnonzero(~np.isnan(exact))  # FAISS cannot score a damaged row
    top = ranked[np.argsort(-exact[ranked], kind="stable")[:k]]
    return exact[top], cand[top]


def open_view(dataset, row_addr: np.ndarray, dim: int, layout: dict | None = None):
    """A verified :class:`VectorView` of ``dataset``'s vector column, or None.

    Parameters
    ----------
    dataset : a ``lance.LanceDataset`` checked out at the snapshot's version.
    row_addr : (n,) uint64, Lance row address (fragment id << 32 | physical row) of each
        snapshot offset, from a scan ``with_row_address=True`` in the snapshot's order.
    dim : the vector length.
    layout : a :meth:`VectorView.layout` of this dataset version saved earlier, instead of
        reading every data file's metadata. It was checked when saved; here it is checked
        against the files' sizes, and ``STORED_ROWS_SAMPLED`` rows spread over the table
        against ``take``.
    """
    root = str(dataset.uri)
    if not os.path.isdir(root):  # object stores: no files to map
        return None
    if layout:
        view, sampled = open_recorded_view(root, row_addr, dim, layout), (1, STORED_ROWS_SAMPLED)
    else:
        view = _view_of(root, row_addr, dim, lambda: read_layout(root, dataset, dim), True)
        sampled = (SAMPLES_PER_PAGE, None)
    try:
        if view is not None and _matches_take(view, dataset, *sampled):
            return view
    except (OSError, ValueError, RuntimeError):
        pass
    return None if not layout else open_view(dataset, row_addr, dim)


def open_recorded_view(root: str, row_addr: np.ndarray, dim: int, layout: dict | None):
    """A :class:`VectorView` from a layout checked against ``take`` when it was recorded
    (:func:`index.snapshot_cache.remember`), checked here against the files' sizes only; None
    where it does not fit them."""
    if not layout or not os.path.isdir(root):
        return None
    return _view_of(root, row_addr, dim, lambda: stored_layout(root, layout), False)


def _view_of(root: str, row_addr, dim: int, find, check_all: bool):
    """A :class:`VectorView` of the pages ``find()`` gives ((pages, fragments), or None where
    the column is not plain), not yet compared with ``take``; None where they cannot be read or
    do not hold the rows (every row's address checked if ``check_all``)."""
    try:
        found = find()
    except (AttributeError, KeyError, OSError, TypeError, ValueError, RuntimeError):
        return None
    view = None if found is None else _assemble(*found, row_addr, dim, check_all)
    if view is not None:
        view.root = root
    return view


def _assemble(pages: list[Page], frags: list, row_addr, dim: int, check_all: bool):
    """A :class:`VectorView`, or None where a row address (of all, if ``check_all``) names a
    fragment or row the pages do not hold."""
    view = VectorView(pages, dim, row_addr, frags)
    try:
        if check_all:
            view.phys_of_off  # noqa: B018 (built, and every address checked)
    except ValueError:
        return None
    return view


def _matches_take(view: VectorView, dataset, per_page: int, rows: int | None = None) -> bool:
    """Do sampled rows equal ``take``'s values, bit for bit? ``per_page`` rows of every page,
    or, given ``rows``, that many snapshot offsets spread evenly (no full offset maps built)."""
    n = len(view.row_addr)
    if rows is not None:
        sample = np.linspace(0, n - 1, min(rows, n)).astype(np.int64) if n else []
    else:
        sample = []
        for p, start in enumerate(view.page_start):
            offs = view.off_of_phys[start : start + view.pages[p].rows]
            live = offs[offs >= 0]
            if len(live):
                sample.extend(live[np.linspace(0, len(live) - 1, per_page).astype(int)])
    if not len(sample):
        return True
    sample = np.unique(np.asarray(sample, np.int64))
    got = dataset.take(sample.tolist(), columns=[VECTOR_COLUMN])[VECTOR_COLUMN]
    values = np.asarray(got.combine_chunks().flatten().to_numpy(zero_copy_only=False))
    ours = view._raw_at(sample)
    if values.dtype != ours.dtype or values.size != ours.size:
        return False
    return np.array_equal(values.view(np.uint8), ours.reshape(-1).view(np.uint8))
