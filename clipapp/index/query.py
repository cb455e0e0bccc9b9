"""Query parsing and composition (rclip-style "dog + snow - grass", image terms), and query_index."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.images.decode import IMAGE_EXTENSIONS
from clipapp.index.filters import SearchFilter, SearchOptions, resolve_options
from clipapp.index.image_index import ImageIndex
from clipapp.index.results import SearchResult
from clipapp.index.sync import Encoder, check_encoder

IMAGE_TERM_PREFIX = "img:"
# An operator is a + or - at the start or after whitespace: "t-shirt" and "my-photo.jpg" stay whole words.
_OPERATOR = re.compile(r"(?:^|(?<=\s))([+-])")


def parse_query(query: str) -> list[tuple[float, str]]:
    """Split "dog + snow - grass" into [(1.0, "dog"), (1.0, "snow"), (-1.0, "grass")].

    `+`/`-` count as operators only at the start or after a space. A term may be an image: `img:PATH`, or the
    path of an existing image file. A blank query, an operator without a term, or no positive term is an error.
    """
    if not isinstance(query, str) or not query.strip():
        raise ClipAppError('The search query is empty: type what to look for, e.g. "dog + snow - grass".')
    parts = _OPERATOR.split(query.strip())
    terms: list[tuple[float, str]] = []
    weight = 1.0
    for position, part in enumerate(parts):
        if position % 2 == 1:  # an operator
            weight = 1.0 if part == "+" else -1.0
            continue
        term = part.strip()  # inner spaces kept: a term may be a file path
        if not term:
            if position == 0:
                continue  # the query starts with an operator
            raise ClipAppError(f"The query {query!r} has a '+' or '-' with nothing after it.")
        terms.append((weight, term))
        weight = 1.0
    _check_terms(terms, query)
    return terms


def _check_terms(terms: Sequence[tuple[float, str]], query: Any) -> None:
    if not terms:
        raise ClipAppError('The search query is empty: type what to look for, e.g. "dog + snow - grass".')
    if not any(weight > 0 for weight, _ in terms):
        raise ClipAppError(f'The query {query!r} only subtracts; add something to look for, e.g. "dog - grass".')


def image_term_path(term: str) -> str | None:
    """The image file a query term names (`img:PATH` or an existing image path), else None (a text term)."""
    if term.startswith(IMAGE_TERM_PREFIX):
        path = os.path.expanduser(term[len(IMAGE_TERM_PREFIX) :].strip())
        if not os.path.isfile(path):
            raise ClipAppError(f"Query image {path!r} does not exist.")
        return path
    path = os.path.expanduser(term)
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(path):
        return path
    return None


def compose_query(
    terms: str | Sequence[tuple[float, str]], encoder: Encoder, templates: Any = None, *, allow_image_paths: bool = True
) -> np.ndarray:
    """One normalized query vector: the weighted sum of the terms' embeddings, renormalized.

    Text terms use `encoder.text_embeddings(labels, templates)` (template ensemble) when `templates` is given,
    else `encoder.encode_texts`; image terms are encoded through `encoder.encode_image_files` (the app's one image
    decoder). `terms` may also be a query string, parsed with `parse_query`. `allow_image_paths=False` treats
    every term as text: a query typed in a browser must not make the server read its own files.
    """
    if isinstance(terms, str):
        terms = parse_query(terms)
    terms = list(terms)
    _check_terms(terms, " ".join(t for _, t in terms))
    kinds = [(weight, term, image_term_path(term) if allow_image_paths else None) for weight, term in terms]
    texts = [term for _, term, image in kinds if image is None]
    images = [image for _, _, image in kinds if image is not None]
    text_vectors: Iterator[np.ndarray] = iter(())
    if texts:
        text_vectors = iter(
            encoder.text_embeddings(texts, templates) if templates is not None else encoder.encode_texts(texts)
        )
    encoded_images = []
    for path, vector, error in encoder.encode_image_files(images) if images else ():
        if vector is None:
            raise ClipAppError(f"Query image {path}: {error or 'could not be read'}")
        encoded_images.append(vector)
    image_vectors = iter(encoded_images)
    total = np.zeros(encoder.embed_dim, dtype=np.float64)
    for weight, _, image in kinds:
        term_vector = next(image_vectors) if image is not None else next(text_vectors)
        total += weight * np.asarray(term_vector, dtype=np.float64)
    norm = np.linalg.norm(total)
    if norm < 1e-6:
        raise ClipAppError("The query terms cancel each other out; there is nothing left to search for.")
    return (total / norm).astype(np.float32)


def query_index(
    index: ImageIndex,
    query: str,
    encoder: Encoder,
    *,
    k: int = 10,
    threshold: float | None = None,
    templates: Any = None,
    allow_image_paths: bool = True,
    tag: str | None = None,
    filter: SearchFilter | None = None,
    sort: str = "relevance",
    options: SearchOptions | None = None,
) -> SearchResult:
    """Parse, compose and search in one call: the hits for a text/image query string (`tag`: only images
    tagged with this label; `filter`, `sort`, or all of them as `options`: see ImageIndex.search)."""
    chosen = resolve_options(options, k=k, threshold=threshold, tag=tag, filter=filter, sort=sort)
    check_encoder(index, encoder)
    vector = compose_query(query, encoder, templates, allow_image_paths=allow_image_paths)
    return index.search(vector, options=chosen)[0]
