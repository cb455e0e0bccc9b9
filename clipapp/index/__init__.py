"""Image collection index: SQLite store (system of record), faiss search structure (derived cache), folder sync,
query parsing. Core package: no Gradio, no CLIP service (embeddings come from a duck-typed `Encoder`).

Modules: store.py (SQLite + vector file, schema), structure.py (size policy, faiss build, nprobe calibration,
exact re-rank, cache file), image_index.py (ImageIndex), migrate.py (the old manifest format), sync.py
(sync_folder, add_images), query.py (query parsing and composition), filters.py (SearchFilter:
date, folder and tag filters on a search; SearchOptions: k, min score, filter, sort), results.py
(Hit, SearchResult, SyncReport: the typed results and their one JSON), compaction.py (dropping dead vector rows),
backup.py (a consistent copy of an index in use), interchange.py (clip-retrieval's embedding-folder layout, out
and in), duplicates.py (near-duplicate groups and their keepers), moves.py (moving files aside with an undo log).
"""

from clipapp.index.backup import BackupReport, backup_index
from clipapp.index.compaction import CompactionReport
from clipapp.index.filters import SORTS, SearchFilter, SearchOptions
from clipapp.index.image_index import ImageIndex, index_exists, require_index, stored_model_spec
from clipapp.index.interchange import EXPORT_FORMATS, ExportReport, export_index, import_embeddings
from clipapp.index.query import compose_query, image_term_path, parse_query, query_index
from clipapp.index.results import Hit, SearchResult, SkippedFile, SyncReport
from clipapp.index.store import DB_NAME, FORMAT_VERSION, VECTORS_NAME, FileInfo, ItemRecord
from clipapp.index.structure import (
    IndexSettings,
    IndexStructure,
    calibrate_nprobe,
    exact_top_k,
    ivf_nlist_for,
    parse_memory_size,
)
from clipapp.index.sync import Encoder, add_images, capture_date, image_sha256, sync_folder
from clipapp.progress import ProgressFn, TqdmProgress, tqdm_progress
from clipapp.vectors import normalize_rows

__all__ = [
    "DB_NAME",
    "EXPORT_FORMATS",
    "FORMAT_VERSION",
    "VECTORS_NAME",
    "BackupReport",
    "CompactionReport",
    "Encoder",
    "ExportReport",
    "FileInfo",
    "Hit",
    "ImageIndex",
    "IndexSettings",
    "IndexStructure",
    "ItemRecord",
    "ProgressFn",
    "SORTS",
    "SearchFilter",
    "SearchOptions",
    "SearchResult",
    "SkippedFile",
    "SyncReport",
    "TqdmProgress",
    "add_images",
    "backup_index",
    "calibrate_nprobe",
    "capture_date",
    "compose_query",
    "exact_top_k",
    "export_index",
    "image_sha256",
    "image_term_path",
    "import_embeddings",
    "index_exists",
    "require_index",
    "ivf_nlist_for",
    "normalize_rows",
    "parse_memory_size",
    "parse_query",
    "query_index",
    "stored_model_spec",
    "sync_folder",
    "tqdm_progress",
]
