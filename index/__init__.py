"""Vectors -> answers: the Chorus archive database (LanceDB + FAISS) and similarity search.

Never imports torch or the embedder package, so search and probes run without them.
"""

from .db import Database, connect
from .faiss_index import IndexSettings, choose_factory
from .search import SearchBuilder

__all__ = ["Database", "IndexSettings", "SearchBuilder", "choose_factory", "connect"]
