"""Work over any number of images (the CLI's `classify` and `eval`): classify files, folders or a whole index as a
stream, optionally on a Ray cluster, into output files; and accuracy on a labelled folder."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from clipapp.classify.stream import ClassifyReport
from clipapp.errors import ClipAppError
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn

DEFAULT_SUSPECTS = 100  # suspects listed in eval's JSON and text; the CSV has every one

if TYPE_CHECKING:
    from clipapp.classify.evaluation import EvalResult
    from clipapp.images.folders import SkippedFile
    from clipapp.model.label_check import LabelWarning


@dataclass(frozen=True)
class BatchClassify:
    """What to classify and where the results go: image files and folders, or every image of `index`.

    Checked on creation, before any model is loaded: the combinations that cannot work are refused with a message.
    """

    images: Sequence[str] = ()
    index: Optional[str] = None
    labels: str = ""
    templates: str = DEFAULT_TEMPLATES
    top_k: int = 5
    adapter: Optional[str] = None  # an adapter file to classify with instead of the labels
    csv: Optional[str] = None
    jsonl: Optional[str] = None
    resume: bool = False
    tag: bool = False  # store the top labels as tags in `index`
    tag_min_prob: float = 0.5
    ray: Optional[str] = None  # a Ray address: encode the files on the cluster
    precision: str = "auto"  # the cluster's precision (see `model.device.cluster_precision`)
    unknown: bool = True  # say per image whether it matches none of the labels (--no-unknown: not)
    keep_results: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        if bool(self.images) == bool(self.index):
            raise ClipAppError("Give image files or folders, or --index PATH (not both).")
        if self.resume and not (self.csv or self.jsonl):
            raise ClipAppError("--resume continues an output file: give --csv PATH or --jsonl PATH.")
        if self.tag and not self.index:
            raise ClipAppError("--tag stores the labels in an index: give --index PATH (index the folder first).")
        if self.ray and self.index:
            raise ClipAppError("--index reads stored vectors and encodes nothing; --ray is for encoding image files.")
        # With an output file, results go there, not into memory.
        object.__setattr__(self, "keep_results", not (self.csv or self.jsonl))


def _classifier(service: ClipService, job: BatchClassify):
    from clipapp.classify.stream import adapter_classifier, zero_shot_classifier

    if job.adapter:
        from clipapp.finetune.adapter import load_adapter

        return adapter_classifier(service, load_adapter(job.adapter, expected_spec=service.spec), unknown=job.unknown)
    return zero_shot_classifier(service, job.labels or "", templates=job.templates, unknown=job.unknown)


def _run(service: ClipService, job: BatchClassify, classifier, outputs: list, progress) -> ClassifyReport:
    from clipapp.classify import stream as core

    options = {"k": job.top_k, "keep_results": job.keep_results, "progress": progress}
    if job.index:
        from clipapp.classify.predictions import IndexTags
        from clipapp.index import ImageIndex

        index = ImageIndex.open(job.index, expected_spec=service.spec)
        if job.tag:
            outputs.append(IndexTags(index, min_prob=job.tag_min_prob))
        vectors = index.iter_vectors(core.VECTOR_BATCH, every_path=True)
        return core.classify_vectors(vectors, classifier, outputs=outputs, total=index.path_count, **options)
    with ExitStack() as stack:
        encoder = stack.enter_context(core.ray_encoder(job.ray, service, precision=job.precision)) if job.ray else None
        return core.classify_files(service, job.images, classifier, outputs=outputs, encoder=encoder, **options)


def _check_classified(job: BatchClassify, report: ClassifyReport) -> None:
    if report.classified or report.resumed:
        return
    if report.skipped:
        raise ClipAppError(
            f"No image could be classified ({len(report.skipped)} unreadable, listed above): {report.skipped[0].error}"
        )
    if job.index:
        raise ClipAppError(f"The index {job.index} has no images yet: add some with `index FOLDER --index PATH`.")
    from clipapp.images.decode import IMAGE_EXTENSIONS

    raise ClipAppError(
        "No images found: give image files, or folders that contain images "
        f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})."
    )


def classify_batch(
    service: ClipService,
    job: BatchClassify,
    *,
    progress: Optional[ProgressFn] = None,
    on_skipped: Optional[Callable[[SkippedFile], None]] = None,
    on_warning: Optional[Callable[[LabelWarning], None]] = None,
) -> ClassifyReport:
    """Classify every image of `job` as a stream, writing its output files as results arrive; the report.

    `on_skipped` hears of each unreadable file before a run that classified nothing is refused (its message says
    they were listed); `on_warning` of each label-check warning before the work starts. Labels that cannot be used
    (duplicates, too many, too long) are refused first, with one error and no warning: checking 5,000 labels'
    prompts only to refuse them took 30 s."""
    from clipapp.classify.predictions import open_outputs
    from clipapp.model.label_check import check_labels
    from clipapp.model.prompts import parse_labels

    if not job.adapter:
        parse_labels(job.labels)  # the check below warns of what the raw text holds (e.g. empty entries)
    warnings = None if job.adapter else check_labels(service, job.labels, job.templates)
    if warnings and on_warning is not None:
        for warning in warnings:
            on_warning(warning)
    classifier = _classifier(service, job)
    outputs = list(
        open_outputs(csv_path=job.csv, jsonl_path=job.jsonl, k=job.top_k, resume=job.resume, unknown=job.unknown)
    )
    try:
        report = _run(service, job, classifier, outputs, progress)
    finally:
        for output in outputs:
            output.close()
    report.warnings = warnings
    for item in report.skipped:
        if on_skipped is not None:
            on_skipped(item)
    _check_classified(job, report)
    return report


def evaluate(
    service: ClipService,
    data_dir: str,
    *,
    adapter: Optional[str] = None,
    templates: str = DEFAULT_TEMPLATES,
    progress: Optional[ProgressFn] = None,
    suspects: Optional[str] = None,
    suspects_top: int = DEFAULT_SUSPECTS,
) -> EvalResult:
    """Top-1/top-5, per-class accuracy and the confusion matrix on DATA_DIR/<class>/<images> (or a .zip), zero-shot
    on the folder names or with the adapter file `adapter`. `suspects`: a CSV path for every image whose folder
    label the model doubts, most suspect first; the result's JSON lists the first `suspects_top`."""
    from clipapp.classify.evaluation import evaluate_folder

    loaded = None
    if adapter:
        from clipapp.finetune.adapter import load_adapter

        loaded = load_adapter(adapter, expected_spec=service.spec)
    if suspects_top < 1:
        raise ClipAppError(f"--suspects-top must be at least 1, not {suspects_top}.")
    result = evaluate_folder(
        service,
        data_dir,
        loaded,
        templates=templates,
        progress=progress,
        suspects=bool(suspects),
        suspects_limit=suspects_top,
    )
    if suspects and result.suspects is not None:
        result.suspects.write_csv(suspects)
    return result
