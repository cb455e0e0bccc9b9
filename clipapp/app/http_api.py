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
from typing import Annotated, Callable, Optional

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipapp.app import actions
from clipapp.app.sessions import MY_UPLOADS, SessionStore
from clipapp.errors import ClipAppError
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.units import parse_size

API_VERSION = "v1"
_BASIC = HTTPBasic(auto_error=False)  # no error of its own: `login` decides, so --auth can be off


class TooLarge(ClipAppError):
    """More input than the server accepts in one request (HTTP 413)."""


def _named_uploads(files: list[UploadFile], service) -> list[actions.NamedImage]:
    if len(files) > actions.MAX_IMAGES_PER_REQUEST:
        raise TooLarge(actions.too_many_images_message(len(files)))
    sources, names = [], []
    for i, upload in enumerate(files):
        buffer = io.BytesIO(upload.file.read())
        buffer.name = upload.filename or f"image {i + 1}"  # errors name the file as the caller sent it
        sources.append(buffer)
        names.append(buffer.name)
    return actions.load_named_images(sources, names=names, limits=service.limits)


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
    service = sessions.service
    limit = parse_size(max_upload)
    app = FastAPI(
        title="clipapp API",
        version=API_VERSION,
        description="CLIP zero-shot classification, similarity, embeddings and image search. "
        "The JSON matches `python -m clipapp ... --json`.",
    )

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

    @app.get("/health", tags=["server"])
    def health() -> dict:
        """For container orchestrators: the model is loaded and answering; how many events wait in the queue."""
        return {
            "status": "ok",
            "model": service.spec,
            "model_loaded": service.model is not None,
            "queue_length": int(queue_length()),
        }

    guarded = [Depends(login), Depends(body_limit)]

    @app.post(f"/{API_VERSION}/classify", tags=["v1"], dependencies=guarded)
    def classify(
        images: Annotated[list[UploadFile], File(description="one or more image files")],
        labels: Annotated[str, Form(description="comma- or newline-separated labels")],
        templates: Annotated[
            str, Form(description="simple, openai, none, or one template with {}")
        ] = DEFAULT_TEMPLATES,
        top_k: Annotated[int, Form(ge=1)] = actions.DEFAULT_TOP_K,
    ) -> dict:
        """Zero-shot top-k labels per image, as `python -m clipapp classify --json`."""
        return actions.classify(service, _named_uploads(images, service), labels, templates=templates, top_k=top_k)

    @app.post(f"/{API_VERSION}/similarity", tags=["v1"], dependencies=guarded)
    def similarity(
        images: Annotated[list[UploadFile], File()],
        texts: Annotated[list[str], Form(description="texts as written: repeat the field or one per line")],
    ) -> dict:
        """Cosine similarity of every image with every text, as `python -m clipapp similarity --json`."""
        return actions.similarity(service, _named_uploads(images, service), _texts(texts))

    @app.post(f"/{API_VERSION}/embed", tags=["v1"], dependencies=guarded)
    def embed(
        images: Annotated[Optional[list[UploadFile]], File()] = None,
        texts: Annotated[
            Optional[list[str]], Form(description="texts to embed: repeat the field or one per line")
        ] = None,
    ) -> dict:
        """L2-normalised embeddings of images or texts (not both in one call)."""
        images, texts = images or [], _texts(texts or [])
        if bool(images) == bool(texts):
            raise ClipAppError("Send either images or texts to embed (one kind per request).")
        if images:
            named = _named_uploads(images, service)
            items, vectors = [i.name for i in named], service.encode_images([i.image for i in named])
        else:
            items = actions.parse_texts(texts)
            vectors = service.encode_texts(items)
        return {
            "model": service.spec,
            "dim": int(vectors.shape[1]),
            "items": items,
            "vectors": [[round(float(x), 6) for x in row] for row in vectors],
        }

    @app.post(f"/{API_VERSION}/search", tags=["v1"], dependencies=guarded)
    def search(
        source: Annotated[str, Form(description="examples, or a folder the server allows")] = "examples",
        query: Annotated[Optional[str], Form(description="text query (a + b - c arithmetic allowed)")] = None,
        image: Annotated[Optional[UploadFile], File(description="or an image to search by")] = None,
        k: Annotated[int, Form(ge=1, le=1000)] = 10,
        threshold: Annotated[Optional[float], Form()] = None,
        templates: Annotated[str, Form()] = DEFAULT_TEMPLATES,
        tag: Annotated[Optional[str], Form(description="only images tagged with this label")] = None,
    ) -> dict:
        """Images most like a text or an image in one of the server's indexes, as `python -m clipapp search --json`."""
        if source == MY_UPLOADS:
            raise ClipAppError(
                "'my uploads' belongs to a browser session; the API searches the shared indexes: "
                f"{', '.join(s for s in sessions.sources() if s != MY_UPLOADS)}."
            )
        if bool(query) == (image is not None):
            raise ClipAppError("Send either a text query or an image to search by.")
        with sessions.searchable(source, "") as index:
            if query:
                result = actions.search_text(
                    service,
                    index,
                    query,
                    k=k,
                    threshold=threshold,
                    templates=templates,
                    allow_image_paths=False,
                    tag=tag or None,
                )
            else:
                assert image is not None  # checked above: exactly one of query and image
                result = actions.search_image(
                    service, index, _named_uploads([image], service)[0].image, k=k, threshold=threshold, tag=tag or None
                )
        return result.to_dict()

    return app
