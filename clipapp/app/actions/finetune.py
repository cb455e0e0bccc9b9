"""Fine-tuning as the front ends ask for it: from the command line (which labelled images: a folder or zip,
`--class` lists, a CSV of search results, checked before the model loads; the adapter written to a file), and for a
browser session (the adapter kept as the session's classifier)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from clipapp.errors import ClipAppError
from clipapp.finetune.config import FinetuneConfig
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn

if TYPE_CHECKING:
    from clipapp.app.sessions import SessionStore
    from clipapp.finetune.intake import LabelledImages
    from clipapp.finetune.results import FinetuneResult

MAX_PAGE_IMAGES = 2000  # one fine-tune holds the CPU for everyone: keep a browser request to a few-shot size


def check_page_size(count: int, given: str = "given") -> None:
    """Refuse more labelled images than the web app fine-tunes on."""
    if count > MAX_PAGE_IMAGES:
        raise ClipAppError(
            f"{count} images {given}; the web app fine-tunes on at most {MAX_PAGE_IMAGES}. "
            "Use `python -m clipapp finetune` for more."
        )


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

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": str(self.adapter), **self.result.to_dict()}


def finetune_to_file(
    service: ClipService,
    source: LabelledSource,
    config: FinetuneConfig,
    out: str,
    *,
    progress: Optional[ProgressFn] = None,
) -> AdapterReport:
    """Fine-tune on `source` and save the adapter as OUT.safetensors and OUT.json."""
    from clipapp.finetune import finetune_folder, finetune_labelled
    from clipapp.finetune.adapter import adapter_paths

    if source.labelled is None:
        assert source.data_dir is not None  # LabelledSource: exactly one way given
        result = finetune_folder(service, source.data_dir, config, out=out, progress=progress)
    else:
        result = finetune_labelled(service, source.labelled, config, out=out, progress=progress)
    weights_path, _ = adapter_paths(out)
    return AdapterReport(model=service.spec, adapter=Path(weights_path), result=result)


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
) -> SessionAdapter:
    """Fine-tune on `data` and keep the adapter as `session`'s classifier (without a session: under the state
    folder's adapters/, for download only)."""
    from clipapp.finetune import finetune

    result = finetune(sessions.service, data, config, name=name, stop=stop, progress=progress, on_epoch=on_epoch)
    adapter = result.adapter
    if session:
        files = sessions.save_adapter(session, adapter)
    else:
        files = adapter.save(sessions.state_dir / "adapters" / name)
    return SessionAdapter(result, (Path(files[0]), Path(files[1])))
