"""Where a Lance table's vectors lie in its data files: the pages of the vector column.

:func:`read_layout` reads them from Lance's public metadata (the field id of the column, the
data file and column serving it, ``lance.file.LanceFileReader.metadata()`` for its pages) and
accepts only plain flat pages: full-zip, no repetition or definition levels, no validity, no
compression. :func:`stored_layout` takes them from a layout saved earlier
(:meth:`index.vector_view.VectorView.layout`), checked against the files. Both give
(pages, [(fragment id, its page count)]) or None; :mod:`index.vector_view` reads the pages.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from pathlib import Path

import numpy as np

VECTOR_COLUMN = "vector"
_DTYPES = {16: np.float16, 32: np.float32}
_BITS = {t: b for b, t in _DTYPES.items()}
_NUM = r"\s*(\d+)"
# (data file, column) -> its pages, or None when not plain: data files never change
_LAYOUTS: dict[tuple[str, int], tuple | None] = {}
_LAYOUTS_MAX = 65_536
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Page:
    """One data page of the vector column: ``rows`` vectors at byte ``position`` of ``path``."""

    path: str
    position: int
    rows: int
    dtype: type

    def as_row(self, root: str) -> list:
        """[path relative to ``root``, position, rows, bits a value]: a stored layout's entry."""
        return [os.path.relpath(self.path, root), self.position, self.rows, _BITS[self.dtype]]


def read_layout(root: str, dataset, dim: int):
    """(pages, [(fragment id, its page count)]) from the data files' metadata, or None where
    the column is not plain flat vectors."""
    pages: list[Page] = []
    frags = []
    field_id = dataset.lance_schema.field(VECTOR_COLUMN).id()
    for frag in dataset.get_fragments():
        got = _fragment_pages(root, frag, dim, field_id)
        if got is None:
            return None
        frags.append((frag.fragment_id, len(got)))
        pages.extend(got)
    return pages, frags


def stored_layout(root: str, layout: dict):
    """The same from a stored :meth:`VectorView.layout`, or None where it does not fit the
    files (a page past a file's end, a path outside the table, an unknown type)."""
    pages: list[Page] = []
    frags = []
    dim = int(layout["dim"])
    sizes: dict[str, int] = {}
    for frag_id, frag_pages in layout["fragments"]:
        frags.append((int(frag_id), len(frag_pages)))
        for rel, position, rows, bits in frag_pages:
            if os.path.isabs(rel) or ".." in Path(rel).parts or int(bits) not in _DTYPES:
                return None
            path = os.path.join(root, rel)
            if path not in sizes:
                sizes[path] = os.path.getsize(path)
            if min(position, rows) < 0 or position + rows * dim * bits // 8 > sizes[path]:
                return None
            pages.append(Page(path, int(position), int(rows), _DTYPES[int(bits)]))
    return pages, frags


def _fragment_pages(root: str, frag, dim: int, field_id: int) -> list[Page] | None:
    """The vector column's pages in one fragment, or None if their layout is not plain."""
    for data_file in frag.data_files():
        fields = list(data_file.fields)
        if field_id not in fields:  # this file serves other columns (or a dropped one)
            continue
        columns = list(getattr(data_file, "column_indices", None) or [])
        column = columns[fields.index(field_id)] if columns else fields.index(field_id)
        path = os.path.join(root, "data", data_file.path)
        with _LOCK:
            layout = _LAYOUTS.get((path, column), ...)
        if layout is ...:
            layout = _file_pages(path, column, dim)
            with _LOCK:
                if len(_LAYOUTS) < _LAYOUTS_MAX:
                    _LAYOUTS[(path, column)] = layout
        return list(layout) if layout is not None else None
    return None


def _file_pages(path: str, column: int, dim: int) -> tuple | None:
    """The pages of ``column`` in one data file, None when it is not plain flat vectors."""
    from lance.file import LanceFileReader

    meta = LanceFileReader(path).metadata()
    names = meta.schema.names
    if not 0 <= column < len(meta.columns):
        return None
    if len(meta.columns) == len(names) and names[column] != VECTOR_COLUMN:
        return None  # one column per field, and this one is not the vectors
    layouts = [_plain_page(str(pg.encoding), pg.buffers, dim) for pg in meta.columns[column].pages]
    if any(lay is None for lay in layouts) or len({lay[2] for lay in layouts}) > 1:
        return None
    size = os.path.getsize(path)
    if any(pos + rows * dim * np.dtype(dt).itemsize > size for rows, pos, dt in layouts):
        return None
    return tuple(Page(path, pos, rows, dt) for rows, pos, dt in layouts if rows)


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
