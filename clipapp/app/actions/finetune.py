"""Fine-tuning as the front ends ask for it: from the command line (which labelled images: a folder or zip,
`--class` lists, a CSV of search results, checked before the model loads; the adapter written to a file), and for a
browser session (the adapter kept as the session's classifier)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from clipapp.errors import ClipAppError
from clipapp.finetune.config import FinetuneConfig
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn

if TYPE_CHECKING:
    from clipapp.app.sessions import SessionStore
    from clipapp.classify.suspects import Suspect
    from clipapp.finetune.intake import LabelledImages
    from clipapp.finetune.plan import Plan
    from clipapp.finetune.results import FinetuneResult
    from clipapp.model.label_check import LabelWarning

MAX_PAGE_IMAGES = 2000  # one fine-tune holds the CPU for everyone: keep a browser request to a few-shot size


def check_page_size(count: int, given: str = "given") -> None:
    """Refuse more labelled images than the web app fine-tunes on."""
    if count > MAX_PAGE_IMAGES:
        raise ClipAppError(
            f"{count} images {given}; the web app fine-tunes on at most {MAX_PAGE_IMAGES}. "
            "Use `python -m clipapp finetune` for more."
        )


def example_class_rows(folder: Path, max_classes: int) -> list[tuple[str, list[str]]]:
    """The bundled labelled example set (assets/finetune-example/<class>/<images>, written by
    scripts/make_examples.py) as the Fine-tune page's (class name, image paths) rows, at most `max_classes`."""
    from clipapp.images.decode import IMAGE_EXTENSIONS

    folder = Path(folder)
    classes = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    rows = [(d.name, [str(f) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]) for d in classes]
    rows = [(name, paths) for name, paths in rows if paths][:max_classes]
    if len(rows) < 2:
        raise ClipAppError(
            f"The example set is missing from {folder} (it ships in the source checkout): run "
            "`python scripts/make_examples.py`, or upload your own labelled images."
        )
    return rows


def labelled_page_uploads(
    zip_path: Optional[str], rows: Sequence[tuple[Optional[str], Sequence[str]]], workdir: Path
) -> LabelledImages:
    """The Fine-tune page's labelled images: a zip of class folders (extracted under `workdir`) and
    (class name, image files) rows; a class may come from both."""
    from clipapp.finetune import extract_labelled_zip, labelled_folder, labelled_uploads

    items: list[tuple[Any, str]] = []
    if zip_path:
        folder = labelled_folder(extract_labelled_zip(zip_path, Path(workdir) / "zip"))
        items += [(path, folder.class_names[t]) for path, t in zip(folder.sources, folder.targets, strict=True)]
    for class_name, paths in rows:
        class_name = " ".join((class_name or "").split())
        if paths and not class_name:
            raise ClipAppError("A class row has images but no class name: type the class name next to them.")
        if class_name and not paths:
            raise ClipAppError(f"Class {class_name!r} has no images: upload a few, or clear its name.")
        items += [(p, class_name) for p in paths]
    if not items:
        raise ClipAppError(
            "No labelled images: upload a zip of class folders (<class>/<images>) or fill the class "
            "rows (a name and a few images each)."
        )
    check_page_size(len(items))
    return labelled_uploads(items, names=[Path(str(path)).name for path, _ in items])  # a folder's sources are paths


@dataclass(frozen=True)
class LabelledSource:
    """The labelled images, given exactly one way: `data_dir` (class folders or a .zip of them), `classes`
    (`NAME=IMAGE,IMAGE` strings) or `from_csv` (`path,label` rows). `from_index`: the index the listed images were
    found in (search results), checked to exist and hold images. Checked and read on creation."""

    data_dir: Optional[str] = None
    classes: Sequence[str] = ()
    from_csv: Optional[str] = None
    from_index: Optional[str] = None
    labelled: Optional[LabelledImages] = field(init=False, default=None)  # the lists or CSV, read

    def __post_init__(self) -> None:
        from clipapp import finetune
        from clipapp.app.picks import check_index

        given = [
            name
            for name, value in (("DATA_DIR", self.data_dir), ("--class", self.classes), ("--from-csv", self.from_csv))
            if value
        ]
        if len(given) != 1:
            raise ClipAppError(
                "Give the labelled images one way: DATA_DIR, --class NAME=IMAGE[,IMAGE...] (once per "
                "class) or --from-csv FILE" + (f"; got {' and '.join(given)}." if given else ".")
            )
        if self.from_index:
            if self.data_dir:
                raise ClipAppError("--from-index takes its images from --class or --from-csv, not from DATA_DIR.")
            check_index(self.from_index)
        if self.classes:
            object.__setattr__(self, "labelled", finetune.labelled_class_lists(self.classes))
        elif self.from_csv:
            object.__setattr__(self, "labelled", finetune.labelled_csv(self.from_csv))


@dataclass
class AdapterReport:
    """A fine-tune written to a file: the model, where the adapter's weights are, and the fine-tune's report."""

    model: str
    adapter: Path
    result: FinetuneResult
    warnings: list[LabelWarning] = field(default_factory=list)  # the label check of the class names

    def to_dict(self) -> dict[str, Any]:
        payload = {"model": self.model, "adapter": str(self.adapter), **self.result.to_dict()}
        return payload | {"warnings": [w.to_dict() for w in self.warnings]}


def finetune_to_file(
    service: ClipService,
    source: LabelledSource,
    config: FinetuneConfig,
    out: str,
    *,
    progress: Optional[ProgressFn] = None,
    on_warning: Optional[Callable[[LabelWarning], None]] = None,
    on_plan: Optional[Callable[[Plan], None]] = None,
) -> AdapterReport:
    """Fine-tune on `source` and save the adapter as OUT.safetensors and OUT.json. The class names are checked
    first (`on_warning` hears each warning before training starts, `on_plan` the planner's choice)."""
    from clipapp.finetune import finetune_labelled, labelled_folder
    from clipapp.finetune.adapter import adapter_paths
    from clipapp.images.archive import labelled_root
    from clipapp.model.label_check import check_labels

    with ExitStack() as stack:
        labelled = source.labelled
        if labelled is None:
            assert source.data_dir is not None  # LabelledSource: exactly one way given
            # a zip is extracted once, here, so its class names are checked before training as a folder's are
            labelled = labelled_folder(stack.enter_context(labelled_root(source.data_dir)))
        warnings = check_labels(service, list(labelled.class_names)) if labelled.class_names else []
        for warning in warnings:
            if on_warning is not None:
                on_warning(warning)
        result = finetune_labelled(service, labelled, config, out=out, progress=progress, on_plan=on_plan)
    weights_path, _ = adapter_paths(out)
    return AdapterReport(model=service.spec, adapter=Path(weights_path), result=result, warnings=warnings)


REVIEW_LIMIT = 24  # suspects the page shows: a screenful of thumbnails


@dataclass
class LabelReview:
    """The Fine-tune tab's "Check my labels": the label check of the class names and the images whose class the
    model doubts (zero-shot, most suspect first), each with its `key` ("class/name") to drop it by and its source."""

    warnings: list[LabelWarning]
    suspects: list[Suspect]
    keys: list[str]
    sources: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "warnings": [w.to_dict() for w in self.warnings],
            "suspects": [s.to_dict() | {"key": key} for s, key in zip(self.suspects, self.keys, strict=True)],
        }


def image_key(data: LabelledImages, i: int) -> str:
    """An image of a fine-tune set by its class and name (names alone may repeat across class folders)."""
    return f"{data.class_names[data.targets[i]]}/{data.names[i]}"


def review_labels(service: ClipService, data: LabelledImages, *, limit: int = REVIEW_LIMIT) -> LabelReview:
    """Before training: warnings about the class names and the `limit` most suspect images."""
    from clipapp.classify.suspects import rank_labelled
    from clipapp.model.label_check import check_labels

    ranker = rank_labelled(service, data.sources, data.targets, data.class_names, data.names)
    rows = ranker.rows(limit)
    return LabelReview(
        warnings=check_labels(service, data.class_names),
        suspects=ranker.ranked(limit),
        keys=[image_key(data, i) for i in rows],
        sources=[data.sources[i] for i in rows],
    )


def drop_images(data: LabelledImages, keys: Sequence[str]) -> LabelledImages:
    """`data` without the images whose `image_key` is in `keys` (the ones the user dropped after the review)."""
    from clipapp.finetune.intake import LabelledImages

    drop = set(keys)
    if not drop:
        return data
    keep = [i for i in range(len(data)) if image_key(data, i) not in drop]
    return LabelledImages(
        sources=[data.sources[i] for i in keep],
        targets=data.targets[keep],
        class_names=list(data.class_names),
        names=[data.names[i] for i in keep],
    )


@dataclass
class SessionAdapter:
    """A fine-tune of the web app, kept: the report and the adapter's two files (weights, metadata)."""

    result: FinetuneResult
    files: tuple[Path, Path]

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.result.adapter.name, **self.result.to_dict()}


def finetune_for_session(
    sessions: SessionStore,
    session: str,
    data: LabelledImages,
    config: FinetuneConfig,
    *,
    name: str,
    stop: Optional[Callable[[], bool]] = None,
    progress: Optional[ProgressFn] = None,
    on_epoch: Optional[Callable[[dict], None]] = None,
    on_plan: Optional[Callable[[Plan], None]] = None,
) -> SessionAdapter:
    """Fine-tune on `data` and keep the adapter as `session`'s classifier (without a session: under the state
    folder's adapters/, for download only)."""
    from clipapp.finetune import finetune

    result = finetune(
        sessions.service, data, config, name=name, stop=stop, progress=progress, on_epoch=on_epoch, on_plan=on_plan
    )
    adapter = result.adapter
    if session:
        files = sessions.save_adapter(session, adapter)
    else:
        files = adapter.save(sessions.state_dir / "adapters" / name)
    return SessionAdapter(result, (Path(files[0]), Path(files[1])))
