"""Read a Lance table's vector column in place from its data files: no second copy.

Lance (file format 2.1 and later) writes a fixed-size-list vector column of more than 128 bytes
a row, without nulls, as "full-zip" pages of flat values: each page is one contiguous buffer of
``rows x dim`` float16 or float32 values (smaller vectors go into chunked mini-blocks, which are
read through ``take``). :class:`VectorView` reads those buffers in place, so the exact
re-rank of an ANN shortlist and exhaustive scans read vectors straight from the table's own files:
the table stays the only copy of the vectors on disk. Scattered rows (a shortlist) are read with
``pread``, so the page cache is not mapped into the process and a search's resident memory does not
grow by the file pages around each row (with large page-cache folios, touching one mapped row maps
up to megabytes). Whole pages are mapped: a stream over every vector (index builds, scoring,
clustering) unmaps each page after reading it (``MADV_DONTNEED``), so its resident memory stays one
page; exact scans, which an explorer repeats, keep them mapped (clean page cache, which the kernel
reclaims under memory pressure). Gathers of many rows read them from the mapping and unmap it too.

The layout comes from Lance's public file metadata (``lance.file.LanceFileReader.metadata()``)
and is trusted only when every page has the plain layout and sampled rows of every page equal
what ``LanceDataset.take`` returns for them. Anything else (older file formats, compression,
nulls, a remote store) makes :func:`open_view` return None, and callers read through ``take``.
A ``LanceDataset.take`` of a few hundred scattered rows costs milliseconds, ``pread`` a tenth of
that (``benchmarks/RESULTS.md``, "vector view").
"""

from __future__ import annotations

import collections
import dataclasses
import mmap
import os
import re
import threading
from collections.abc import Iterator

import faiss
import numpy as np

VECTOR_COLUMN = "vector"
SAMPLES_PER_PAGE = 2  # rows of each page compared with ``take`` before the view is trusted
OPEN_FILES_MAX = 256  # files kept open (and mapped) at once: each holds a file descriptor
PREAD_SHARE = 32  # a page is mapped for a gather of at least 1/PREAD_SHARE of its rows
# from this many scattered rows a mapped gather (then unmapped) beats one pread per row:
# 1 280 rows 1.45 vs 2.46 ms, 160 rows 0.45 vs 0.36 ms (benchmarks/RESULTS.md, "vector view")
MAPPED_GATHER_MIN = 512
_DTYPES = {16: np.float16, 32: np.float32}
_NUM = r"\s*(\d+)"
_LAYOUTS: dict[str, tuple | None] = {}  # data file path -> its pages (data files never change)
_LAYOUTS_MAX = 65_536
_OPEN: collections.OrderedDict[str, tuple] = collections.OrderedDict()  # LRU: (file, mmap)
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Page:
    """One data page of the vector column: ``rows`` vectors at byte ``position`` of ``path``."""

    path: str
    position: int
    rows: int
    dtype: type


class VectorView:
    """The vectors of one snapshot of an embeddings table, mapped from its data files.

    Rows are addressed by snapshot offset (position in scan order). Physical rows (every row
    of every data page, deleted ones too) are numbered page by page, fragment by fragment.

    Parameters
    ----------
    pages : the vector column's data pages in physical order.
    dim : the vector length.
    off_of_phys : (P,) int64, the snapshot offset of each physical row, -1 where deleted.
    phys_of_off : (n,) int64, the physical row of each snapshot offset.
    """

    def __init__(self, pages: list[Page], dim: int, off_of_phys, phys_of_off):
        self.pages = pages
        self.dim = int(dim)
        self.page_start = np.cumsum([0] + [p.rows for p in pages])[:-1]  # (pages,) physical
        self.off_of_phys = np.asarray(off_of_phys, np.int64)
        self.phys_of_off = np.asarray(phys_of_off, np.int64)
        self.dtype = np.dtype(pages[0].dtype if pages else np.float32)

    def page(self, p: int) -> np.ndarray:
        """Page ``p`` as a read-only (rows, dim) array over the mapped file."""
        page = self.pages[p]
        mapped = _open(page.path)[1]
        count = page.rows * self.dim
        return np.frombuffer(mapped, page.dtype, count, page.position).reshape(page.rows, self.dim)

    def advise(self, p: int, option: str) -> None:
        """``madvise`` page ``p``'s bytes (``"MADV_WILLNEED"`` before reading it whole)."""
        page = self.pages[p]
        mapped = _open(page.path)[1]
        if hasattr(mapped, "madvise") and hasattr(mmap, option):
            start = page.position - page.position % mmap.PAGESIZE
            length = page.position + page.rows * self.dim * self.dtype.itemsize - start
            mapped.madvise(getattr(mmap, option), start, length)

    def rows(self, offsets) -> np.ndarray:
        """Vectors (m, dim) float32 at snapshot ``offsets``, in the given order."""
        return _to_float32(self._raw(self.phys_of_off[np.asarray(offsets, np.int64).ravel()]))

    def scores(self, offsets, q: np.ndarray) -> np.ndarray:
        """Inner products (m,) of the rows at snapshot ``offsets`` with one query ``q`` (dim,)."""
        raw = self._raw(self.phys_of_off[np.asarray(offsets, np.int64).ravel()])  # (m, dim)
        if not len(raw):
            return np.empty(0, np.float32)
        q = np.ascontiguousarray(q, np.float32).reshape(1, self.dim)
        if raw.dtype != np.float16:
            return raw @ q[0]
        s, i = _fp16_index(raw).search(q, len(raw))  # FAISS's float16 kernel, no float32 copy
        out = np.empty(len(raw), np.float32)
        out[i[0]] = s[0]
        return out

    def _raw(self, phys: np.ndarray) -> np.ndarray:
        """Stored vectors (m, dim), as stored (float16 or float32), at physical rows ``phys``."""
        out = np.empty((len(phys), self.dim), self.dtype)
        page = np.searchsorted(self.page_start, phys, side="right") - 1  # (m,)
        row_bytes = self.dim * self.dtype.itemsize
        for p in np.unique(page):
            sel = np.flatnonzero(page == p)
            rows = phys[sel] - self.page_start[p]
            many = len(sel) * PREAD_SHARE >= self.pages[p].rows or len(phys) >= MAPPED_GATHER_MIN
            if many or not hasattr(os, "preadv"):
                out[sel] = self.page(p)[rows]
                self.advise(p, "MADV_DONTNEED")  # keep the rows, not the folios around them
                continue
            file = _open(self.pages[p].path)[0]  # held: an evicted file closes when unused
            starts = self.pages[p].position + rows * row_bytes
            for i, start in zip(sel, starts.tolist(), strict=True):
                if os.preadv(file.fileno(), [out[i]], start) != row_bytes:
                    raise OSError(f"{self.pages[p].path} is shorter than its metadata says")
        return out

    def iter_rows(self, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (snapshot offsets (b,), vectors (b, dim) float32) over every row, in scan order."""
        for p, start in enumerate(self.page_start):
            self.advise(p, "MADV_WILLNEED")
            page = self.page(p)
            offs = self.off_of_phys[start : start + len(page)]
            for lo in range(0, len(page), batch_rows):
                part = offs[lo : lo + batch_rows]
                live = part >= 0
                raw = page[lo : lo + batch_rows]
                if not live.all():
                    raw, part = raw[live], part[live]
                if len(part):
                    yield part, _to_float32(np.ascontiguousarray(raw))
            del page, raw
            self.advise(p, "MADV_DONTNEED")  # a stream reads each page once: keep none mapped

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
        scores, offsets = [], []
        for p, start in enumerate(self.page_start):
            offs = self.off_of_phys[start : start + self.pages[p].rows]  # (rows,)
            ok = offs >= 0
            if allowed is not None:
                ok &= allowed[np.maximum(offs, 0)]
            count = int(np.count_nonzero(ok))
            if not count:
                continue
            self.advise(p, "MADV_WILLNEED")
            s, i = _scan_page(self.page(p), q, min(k, count), None if count == len(ok) else ok)
            scores.append(s)
            offsets.append(np.where(i >= 0, offs[np.maximum(i, 0)], -1))
        if not scores:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        s = np.concatenate(scores, axis=1)  # (m, pages * k)
        o = np.concatenate(offsets, axis=1)
        s = np.where(o >= 0, s, -np.inf)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]  # (m, k)
        return np.take_along_axis(s, top, 1), np.take_along_axis(o, top, 1)


def _open(path: str) -> tuple:
    """(unbuffered file, read-only mapping) of ``path`` from a small LRU; a caller's reference
    keeps an evicted pair open until it is done with it."""
    with _LOCK:
        pair = _OPEN.get(path)
        if pair is not None:
            _OPEN.move_to_end(path)
            return pair
    file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed when the LRU and callers drop it)
    pair = (file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    with _LOCK:
        _OPEN[path] = pair
        while len(_OPEN) > OPEN_FILES_MAX:
            _OPEN.popitem(last=False)
    return pair


def _fp16_index(vectors: np.ndarray) -> faiss.Index:
    """A FAISS float16 flat index holding ``vectors`` (m, dim) float16: their bytes are its
    ``SQfp16`` codes, so filling it is one copy and its scan runs FAISS's float16 kernel."""
    m, d = vectors.shape
    index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index.add_sa_codes(np.ascontiguousarray(vectors).view(np.uint8).reshape(m, 2 * d))
    return index


def _to_float32(raw: np.ndarray) -> np.ndarray:
    """(m, dim) float32 of stored vectors; FAISS decodes float16 ~3x faster than NumPy's cast."""
    if raw.dtype != np.float16 or not len(raw):
        return raw.astype(np.float32, copy=False)
    return faiss.ScalarQuantizer(raw.shape[1], faiss.ScalarQuantizer.QT_fp16).decode(
        raw.view(np.uint8)
    )


def _scan_page(page: np.ndarray, q: np.ndarray, k: int, ok: np.ndarray | None):
    """FAISS exhaustive scan of one mapped page: (scores (m, k), page rows (m, k))."""
    if page.dtype == np.float16:
        index = _fp16_index(page)
    else:
        index = faiss.IndexFlatIP(page.shape[1])
        index.add(page)
    if ok is None:
        return index.search(q, k)
    bits = np.packbits(ok, bitorder="little")  # the selector reads this during the search
    sel = faiss.IDSelectorBitmap(len(ok), faiss.swig_ptr(bits))
    return index.search(q, k, params=faiss.SearchParameters(sel=sel))


def open_view(dataset, row_addr: np.ndarray, dim: int) -> VectorView | None:
    """A verified :class:`VectorView` of ``dataset``'s vector column, or None.

    Parameters
    ----------
    dataset : a ``lance.LanceDataset`` checked out at the snapshot's version.
    row_addr : (n,) uint64, Lance row address (fragment id << 32 | physical row) of each
        snapshot offset, from a scan ``with_row_address=True`` in the snapshot's order.
    dim : the vector length.
    """
    root = str(dataset.uri)
    if not os.path.isdir(root):  # object stores: no files to map
        return None
    pages: list[Page] = []
    base = {}  # fragment id -> its first physical row
    total = 0
    try:
        for frag in dataset.get_fragments():
            got = _fragment_pages(root, frag, dim)
            if got is None:
                return None
            base[frag.fragment_id] = total
            pages.extend(got)
            total += sum(p.rows for p in got)
    except (OSError, ValueError, RuntimeError):
        return None
    addr = np.asarray(row_addr, np.uint64)
    frag_id = (addr >> np.uint64(32)).astype(np.int64)
    row = (addr & np.uint64(0xFFFFFFFF)).astype(np.int64)
    first = np.full(max(base, default=-1) + 2, -1, np.int64)
    first[list(base)] = list(base.values())
    frag_id = np.minimum(frag_id, len(first) - 1)  # an unknown fragment reads -1 below
    if len(addr) and (first[frag_id] < 0).any():
        return None
    phys_of_off = first[frag_id] + row
    if len(phys_of_off) and phys_of_off.max() >= total:
        return None
    off_of_phys = np.full(total, -1, np.int64)
    off_of_phys[phys_of_off] = np.arange(len(phys_of_off))
    view = VectorView(pages, dim, off_of_phys, phys_of_off)
    try:
        return view if _matches_take(view, dataset) else None
    except (OSError, ValueError, RuntimeError):
        return None


def _matches_take(view: VectorView, dataset) -> bool:
    """Do sampled rows of every page equal ``take``'s values for them, bit for bit?"""
    sample = []
    for p, start in enumerate(view.page_start):
        offs = view.off_of_phys[start : start + view.pages[p].rows]
        live = offs[offs >= 0]
        if len(live):
            sample.extend(live[np.linspace(0, len(live) - 1, SAMPLES_PER_PAGE).astype(int)])
    if not sample:
        return True
    sample = np.unique(np.asarray(sample, np.int64))
    got = dataset.take(sample.tolist(), columns=[VECTOR_COLUMN])[VECTOR_COLUMN]
    values = np.asarray(got.combine_chunks().flatten().to_numpy(zero_copy_only=False))
    ours = view._raw(view.phys_of_off[sample])
    if values.dtype != ours.dtype or values.size != ours.size:
        return False
    return np.array_equal(values.view(np.uint8), ours.reshape(-1).view(np.uint8))


def _fragment_pages(root: str, frag, dim: int) -> list[Page] | None:
    """The vector column's pages in one fragment, or None if their layout is not plain."""
    for data_file in frag.data_files():
        path = os.path.join(root, "data", data_file.path)
        with _LOCK:
            layout = _LAYOUTS.get(path, ...)
        if layout is ...:
            layout = _file_pages(path, dim)
            with _LOCK:
                if len(_LAYOUTS) < _LAYOUTS_MAX:
                    _LAYOUTS[path] = layout
        if layout == ():  # this data file holds other columns
            continue
        return list(layout) if layout is not None else None
    return None


def _file_pages(path: str, dim: int) -> tuple | None:
    """The vector pages of one data file, () when it has no vector column, None when the
    column's layout is not plain flat values."""
    from lance.file import LanceFileReader

    meta = LanceFileReader(path).metadata()
    names = meta.schema.names
    if VECTOR_COLUMN not in names:
        return ()
    if len(meta.columns) != len(names):  # nested fields: columns are not one per field
        return None
    column = meta.columns[names.index(VECTOR_COLUMN)]
    layouts = [_plain_page(str(pg.encoding), pg.buffers, dim) for pg in column.pages]
    if any(lay is None for lay in layouts) or len({lay[2] for lay in layouts}) > 1:
        return None
    size = os.path.getsize(path)
    if any(pos + rows * dim * np.dtype(dt).itemsize > size for rows, pos, dt in layouts):
        return None
    return tuple(Page(path, pos, rows, dt) for rows, pos, dt in layouts)


def _plain_page(encoding: str, buffers, dim: int) -> tuple[int, int, type] | None:
    """(rows, buffer position, dtype) of a page holding plain flat vectors, else None."""
    text = " ".join(encoding.split())
    need = ("FullZipLayout", "bits_rep: 0,", "bits_def: 0,", "has_validity: false", "Flat {")
    if not all(s in text for s in need):
        return None
    banned = ("Zstd", "Lz4", "General", "Bitpack", "Rle", "Fsst", "Dictionary", "Constant")
    if any(s in text for s in banned):
        return None
    items = re.search(r"num_items:" + _NUM, text)
    visible = re.search(r"num_visible_items:" + _NUM, text)
    per = re.search(r"items_per_value:" + _NUM, text)
    bits = re.search(r"bits_per_value:" + _NUM, text)
    if not (items and visible and per and bits) or len(buffers) != 1:
        return None
    rows, width = int(items[1]), int(bits[1])
    if int(visible[1]) != rows or int(per[1]) != dim or width not in _DTYPES:
        return None
    if buffers[0].size != rows * dim * width // 8:
        return None
    return rows, int(buffers[0].position), _DTYPES[width]
