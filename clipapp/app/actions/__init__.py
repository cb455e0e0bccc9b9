"""The app's operations as plain functions with typed arguments, returning typed results: every CLI command, page
handler and /v1 route calls one of them. Each result's one `to_dict` is the JSON of the CLI, the page and /v1, so
all give the same answers by construction.

Modules by concern: images (a request's images), zero_shot (classify, similarity, embed a few images), explain
(where each label matches: region maps), batch (classify any number as a stream, evaluate), search (index a folder,
search an index), sources (the server's indexes by name, per browser session: the Search tab and /v1/search),
finetune (fine-tune to a file, or for a browser session), archive (compact, back up, export and import an index),
collection_map (the map of an index), duplicates
(near-duplicate groups, moving them aside and back), tags (tagging a selection by hand), models (the models one can
pick, with their measured cost).
"""

from __future__ import annotations

from clipapp.app.actions.archive import backup_index, compact_index, export_index, import_embeddings
from clipapp.app.actions.batch import BatchClassify, classify_batch, evaluate
from clipapp.app.actions.collection_map import (
    CollectionMap,
    MapCluster,
    collection_map,
    map_of_index,
    shared_map,
    source_map,
)
from clipapp.app.actions.duplicates import (
    find_duplicates,
    move_duplicates,
    shared_duplicates,
    source_duplicates,
    undo_duplicate_moves,
    write_duplicates_csv,
)
from clipapp.app.actions.explain import Explanation, explain
from clipapp.app.actions.finetune import (
    MAX_PAGE_IMAGES,
    AdapterReport,
    LabelledSource,
    LabelReview,
    SessionAdapter,
    drop_images,
    example_class_rows,
    finetune_for_session,
    finetune_to_file,
    labelled_page_uploads,
    review_labels,
)
from clipapp.app.actions.images import (
    MAX_IMAGES_PER_REQUEST,
    MAX_TEXTS_PER_REQUEST,
    NamedImage,
    load_named_images,
    too_many_images_message,
)
from clipapp.app.actions.models import ModelRow, ModelTable, list_models
from clipapp.app.actions.search import (
    index_folder,
    index_folder_ray,
    search_image,
    search_text,
    search_vector,
    sync_index,
)
from clipapp.app.actions.sources import (
    SourceUpdate,
    labelled_source_picks,
    pick_into_class,
    search_like_indexed,
    search_shared,
    search_source_image,
    search_source_text,
    source_tags,
    update_source,
)
from clipapp.app.actions.tags import TagReport, shared_tag, tag_images, tag_in_index, tag_source_images
from clipapp.app.actions.zero_shot import (
    DEFAULT_TOP_K,
    Classification,
    Embeddings,
    Similarity,
    classify,
    embed,
    parse_texts,
    similarity,
)

__all__ = [
    "find_duplicates",
    "move_duplicates",
    "shared_duplicates",
    "source_duplicates",
    "undo_duplicate_moves",
    "write_duplicates_csv",
    "CollectionMap",
    "ModelRow",
    "ModelTable",
    "list_models",
    "MapCluster",
    "collection_map",
    "map_of_index",
    "shared_map",
    "TagReport",
    "shared_tag",
    "tag_images",
    "tag_in_index",
    "tag_source_images",
    "source_map",
    "backup_index",
    "compact_index",
    "export_index",
    "import_embeddings",
    "DEFAULT_TOP_K",
    "MAX_IMAGES_PER_REQUEST",
    "MAX_PAGE_IMAGES",
    "MAX_TEXTS_PER_REQUEST",
    "AdapterReport",
    "LabelReview",
    "drop_images",
    "example_class_rows",
    "review_labels",
    "BatchClassify",
    "Classification",
    "Embeddings",
    "Explanation",
    "LabelledSource",
    "NamedImage",
    "Similarity",
    "SessionAdapter",
    "SourceUpdate",
    "classify",
    "classify_batch",
    "embed",
    "evaluate",
    "explain",
    "finetune_for_session",
    "finetune_to_file",
    "index_folder",
    "index_folder_ray",
    "labelled_page_uploads",
    "labelled_source_picks",
    "load_named_images",
    "parse_texts",
    "pick_into_class",
    "search_image",
    "search_like_indexed",
    "search_shared",
    "search_source_image",
    "search_source_text",
    "search_text",
    "search_vector",
    "similarity",
    "source_tags",
    "sync_index",
    "too_many_images_message",
    "update_source",
]
