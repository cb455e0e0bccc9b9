"""Plain HTTP API beside the Gradio one: versioned JSON routes under /v1 and a /health probe; no Gradio here.

Gradio's protocol (upload each file, join a queue, read an event stream) costs several round trips per call; these
routes take one multipart POST and answer with the same JSON as the CLI (`clipapp.app.actions`), so programs get the
same results at a fraction of the overhead. OpenAPI docs are at /docs. The same `--auth` login protects them
(HTTP basic: Gradio's login only covers the routes Gradio owns), and the same limits apply, refused with a
message: 400 for bad input, 413 for too much of it, 422 for a malformed request, 401 without the login.
"""

from __future__ import annotations

import io
import secrets
from typing import Annotated, Callable, Literal, Optional

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipapp.app import actions
from clipapp.app.sessions import SessionStore
from clipapp.errors import ClipAppError
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.units import parse_size

API_VERSION = "v1"
_BASIC = HTTPBasic(auto_error=False)  # no error of its own: `login` decides, so --auth can be off


class TooLarge(ClipAppError):
    """More input than the server accepts in one request (HTTP 413)."""


def _named_uploads(files: list[UploadFile], service) -> list[actions.NamedImage]:
    sources = _buffers(files)
    return actions.load_named_images(sources, names=[s.name for s in sources], limits=service.limits)


def _buffers(files: list[UploadFile]) -> list[io.BytesIO]:
    if len(files) > actions.MAX_IMAGES_PER_REQUEST:
        raise TooLarge(actions.too_many_images_message(len(files)))
    return [_buffer(upload, i) for i, upload in enumerate(files)]


def _buffer(upload: UploadFile, i: int = 0) -> io.BytesIO:
    """The upload's bytes, named as the caller sent the file (errors name it so)."""
    buffer = io.BytesIO(upload.file.read())
    buffer.name = upload.filename or f"image {i + 1}"
    return buffer


def _texts(values: list[str]) -> list[str]:
    """Repeated form fields, or one field with one text per line."""
    return [line for value in values for line in value.splitlines()] if values else []


def create_app(
    sessions: SessionStore,
    *,
    auth: Optional[tuple[str, str]] = None,
    max_upload: Optional[str] = None,
    queue_length: Callable[[], int] = lambda: 0,
) -> FastAPI:
    """The FastAPI app with /health and the /v1 routes; app.py mounts the Gradio page on it at /."""
    app = FastAPI(
        title="clipapp API",
        version=API_VERSION,
        description="CLIP zero-shot classification, similarity, embeddings and image search. "
        "The JSON matches `python -m clipapp ... --json`.",
    )
    _add_error_handlers(app)
    _add_health(app, sessions.service, queue_length)
    login = [Depends(_login(auth))]
    guarded = [*login, Depends(_body_limit(parse_size(max_upload)))]
    _add_model_routes(app, sessions.service, guarded)
    _add_models_route(app, sessions.service, login)  # a GET: no body to limit
    _add_search_route(app, sessions, guarded)
    _add_duplicates_route(app, sessions, guarded)
    _add_map_route(app, sessions, guarded)
    _add_tag_route(app, sessions, guarded)
    return app


# -- guards: the login and the body limit, on every /v1 route ----------------------------------------------------
def _login(auth: Optional[tuple[str, str]]) -> Callable[..., None]:
    def login(credentials: Annotated[Optional[HTTPBasicCredentials], Depends(_BASIC)]) -> None:
        if auth is None:
            return
        if (
            credentials is not None
            and secrets.compare_digest(credentials.username.encode(), auth[0].encode())
            and secrets.compare_digest(credentials.password.encode(), auth[1].encode())
        ):
            return
        raise HTTPException(
            401,
            "Log in with the user and password the server was started with (--auth), "
            "as HTTP basic auth: curl -u USER:PASSWORD ...",
            headers={"WWW-Authenticate": "Basic"},
        )

    return login


def _body_limit(limit: Optional[int]) -> Callable[[Request], None]:
    def body_limit(request: Request) -> None:
        """Refuse an oversized body before it is read (uploads are spooled to disk as they arrive)."""
        if limit is None:
            return
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPException(411, "Send a Content-Length header (the server limits request sizes).")
        if int(length) > limit:
            raise HTTPException(
                413,
                f"The request is {int(length) / 1e6:.1f} MB; this server accepts at most "
                f"{limit / 1e6:.1f} MB (--max-upload).",
            )

    return body_limit


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal is `{"error": message}`: 400 a user mistake, 413 too much input, 422 a malformed request."""

    @app.exception_handler(ClipAppError)
    async def user_error(_request: Request, exc: ClipAppError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=413 if isinstance(exc, TooLarge) else 400)

    @app.exception_handler(StarletteHTTPException)
    async def refused(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"Malformed request: {problems}.", "detail": exc.errors()}, status_code=422)


# -- routes -----------------------------------------------------------------------------------------------------
def _add_health(app: FastAPI, service, queue_length: Callable[[], int]) -> None:
    @app.get("/health", tags=["server"])
    def health() -> dict:
        """For container orchestrators: the model is loaded and answering; how many events wait in the queue."""
        return {
            "status": "ok",
            "model": service.spec,
            "model_loaded": service.model is not None,
            "queue_length": int(queue_length()),
        }


def _add_model_routes(app: FastAPI, service, guarded: list) -> None:
    """/v1/classify, /v1/similarity, /v1/explain and /v1/embed: uploaded images (and texts) in, the CLI's JSON
    out."""

    @app.post(f"/{API_VERSION}/classify", tags=["v1"], dependencies=guarded)
    def classify(
        images: Annotated[list[UploadFile], File(description="one or more image files")],
        labels: Annotated[str, Form(description="comma- or newline-separated labels")],
        templates: Annotated[
            str, Form(description="simple, openai, none, or one template with {}")
        ] = DEFAULT_TEMPLATES,
        top_k: Annotated[int, Form(ge=1)] = actions.DEFAULT_TOP_K,
        unknown: Annotated[bool, Form(description="say per image whether it matches none of the labels")] = True,
    ) -> dict:
        """Zero-shot top-k labels per image, as `python -m clipapp classify --json`."""
        named = _named_uploads(images, service)
        return actions.classify(service, named, labels, templates=templates, top_k=top_k, unknown=unknown).to_dict()

    @app.post(f"/{API_VERSION}/similarity", tags=["v1"], dependencies=guarded)
    def similarity(
        images: Annotated[list[UploadFile], File()],
        texts: Annotated[list[str], Form(description="texts as written: repeat the field or one per line")],
    ) -> dict:
        """Cosine similarity of every image with every text, as `python -m clipapp similarity --json`."""
        return actions.similarity(service, _named_uploads(images, service), _texts(texts)).to_dict()

    @app.post(f"/{API_VERSION}/explain", tags=["v1"], dependencies=guarded)
    def explain(
        images: Annotated[list[UploadFile], File(description="one or more image files")],
        labels: Annotated[str, Form(description="comma- or newline-separated labels to locate")],
        templates: Annotated[
            str, Form(description="simple, openai, none, or one template with {}")
        ] = DEFAULT_TEMPLATES,
        method: Annotated[Literal["crops", "occlusion", "gradcam"], Form()] = "crops",
        cells: Annotated[int, Form(ge=1, le=64, description="grid cells along each image's long side")] = 8,
    ) -> dict:
        """Where each label matches in each image: a grid per image and label, rows top to bottom, as
        `python -m clipapp explain --json`."""
        named = _named_uploads(images, service)
        return actions.explain(
            service,
            [item.image for item in named],
            labels,
            names=[item.name for item in named],
            method=method,
            templates=templates,
            cells=cells,
        ).to_dict()

    @app.post(f"/{API_VERSION}/embed", tags=["v1"], dependencies=guarded)
    def embed(
        images: Annotated[Optional[list[UploadFile]], File()] = None,
        texts: Annotated[
            Optional[list[str]], Form(description="texts to embed: repeat the field or one per line")
        ] = None,
    ) -> dict:
        """L2-normalised embeddings of images or texts (not both in one call)."""
        return actions.embed(service, images=_buffers(images or []), texts=_texts(texts or [])).to_dict()


def _add_models_route(app: FastAPI, service, login: list) -> None:
    @app.get(f"/{API_VERSION}/models", tags=["v1"], dependencies=login)
    def models() -> dict:
        """The models one can pick (published accuracy, license, cost measured on a 2-core CPU), the default marked
        and the one this server was asked for `selected`, as `python -m clipapp models --json`."""
        return actions.list_models(service.loaded.requested_spec).to_dict()


def _add_search_route(app: FastAPI, sessions: SessionStore, guarded: list) -> None:
    @app.post(f"/{API_VERSION}/search", tags=["v1"], dependencies=guarded)
    def search(
        source: Annotated[str, Form(description="examples, or a folder the server allows")] = "examples",
        query: Annotated[Optional[str], Form(description="text query (a + b - c arithmetic allowed)")] = None,
        image: Annotated[Optional[UploadFile], File(description="or an image to search by")] = None,
        k: Annotated[int, Form(ge=1, le=1000)] = 10,
        threshold: Annotated[Optional[float], Form()] = None,
        templates: Annotated[str, Form()] = DEFAULT_TEMPLATES,
        tag: Annotated[Optional[str], Form(description="only images tagged with this label")] = None,
        after: Annotated[Optional[str], Form(description="only images dated on or after YYYY-MM-DD")] = None,
        before: Annotated[Optional[str], Form(description="only images dated on or before YYYY-MM-DD")] = None,
        under: Annotated[Optional[str], Form(description="only images with a path under this folder")] = None,
        sort: Annotated[Literal["relevance", "date"], Form(description="date: the top k newest first")] = "relevance",
    ) -> dict:
        """Images most like a text or an image in one of the server's indexes, as `python -m clipapp search --json`."""
        # the index (faiss) loads on the first search, not at startup
        from clipapp.index.filters import SearchFilter, SearchOptions

        chosen = SearchFilter.parse(after=after, before=before, under=under, tag=tag)
        options = SearchOptions(k=k, min_score=threshold, filter=chosen, sort=sort)
        upload = _buffer(image) if image is not None else None
        return actions.search_shared(
            sessions, source, query=query, image=upload, options=options, templates=templates
        ).to_dict()


def _add_duplicates_route(app: FastAPI, sessions: SessionStore, guarded: list) -> None:
    @app.post(f"/{API_VERSION}/duplicates", tags=["v1"], dependencies=guarded)
    def duplicates(
        source: Annotated[str, Form(description="examples, or a folder the server allows")] = "examples",
        threshold: Annotated[
            Optional[float], Form(gt=0, le=1, description="smallest cosine of two copies (default: measured)")
        ] = None,
    ) -> dict:
        """Near-duplicate groups of one of the server's indexes, as `python -m clipapp duplicates --json`."""
        return actions.shared_duplicates(sessions, source, threshold=threshold).to_dict()


def _add_map_route(app: FastAPI, sessions: SessionStore, guarded: list) -> None:
    @app.post(f"/{API_VERSION}/map", tags=["v1"], dependencies=guarded)
    def collection_map(
        source: Annotated[str, Form(description="examples, or a folder the server allows")] = "examples",
        labels: Annotated[
            Optional[str], Form(description="name clusters from these labels, comma separated (default: built in)")
        ] = None,
        clusters: Annotated[
            Optional[int], Form(ge=1, description="number of k-means clusters (default: sqrt(n/2), at most 30)")
        ] = None,
    ) -> dict:
        """Every image of one of the server's indexes in 2D with named clusters, as `python -m clipapp map --json`."""
        names = [t for t in (labels or "").split(",") if t.strip()]
        return actions.shared_map(sessions, source, labels=names, clusters=clusters).to_dict()


def _add_tag_route(app: FastAPI, sessions: SessionStore, guarded: list) -> None:
    @app.post(f"/{API_VERSION}/tag", tags=["v1"], dependencies=guarded)
    def tag(
        tag: Annotated[str, Form(description="the tag to give the images (their other tags stay)")],
        paths: Annotated[list[str], Form(description="indexed images (repeat the field, or one path per line)")],
        source: Annotated[str, Form(description="examples, or a folder the server allows")] = "examples",
    ) -> dict:
        """Tag images of one of the server's indexes (a map selection), as `python -m clipapp tag --json`; then
        /v1/search filters by it with -F tag=..."""
        return actions.shared_tag(sessions, source, _texts(paths), tag).to_dict()
