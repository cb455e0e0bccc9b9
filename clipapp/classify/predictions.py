"""Prediction files: CSV (`image,label,prob,label_2,prob_2,...`, then `unknown,unknown_score` unless turned off)
and JSON Lines, written as results arrive, resumable.

Rows are flushed after every batch (and fsynced every few seconds), so a killed run leaves every finished batch on
disk, at worst with a torn last line; `resume=True` cuts that line off, reads which images are done and appends
the rest. One row per image; the JSON Lines rows are `classify`'s JSON results, `{"image", "top": [{"label",
"prob"}]}`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from clipapp.classify.stream import PredictionBatch
from clipapp.errors import ClipAppError

FSYNC_EVERY_S = 5.0


def significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """Rounded to `digits` significant digits (tiny sigmoid probabilities keep theirs), as float64 whose shortest
    repr is that many digits at most. Vectorised: with csv writing the floats, 8192 x 5 values take ~65 ms, ~95 ms
    through np.char.mod("%.6g")."""
    x = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log10(np.abs(x), where=x != 0, out=np.zeros_like(x)))
    scale = 10.0 ** (digits - 1 - exponent)
    return np.round(x * scale) / scale


UNKNOWN_COLUMNS = ["unknown", "unknown_score"]


def csv_header(k: int, *, unknown: bool = False) -> list[str]:
    columns = ["image", "label", "prob"] + [name for i in range(2, k + 1) for name in (f"label_{i}", f"prob_{i}")]
    return columns + (UNKNOWN_COLUMNS if unknown else [])


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that a kill left without its newline (a half-written row)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        while True:
            f.seek(size - block)
            data = f.read(block)
            cut = data.rfind(b"\n")
            if cut >= 0:
                f.truncate(size - block + cut + 1)
                return
            if block == size:
                f.truncate(0)
                return
            block = min(size, block * 2)


class PredictionFile:
    """An output file being written: `done` holds the images it already has (from an earlier run when resumed)."""

    kind = ""

    def __init__(self, path: str | os.PathLike, k: int, *, resume: bool = False, unknown: bool = False):
        self.path = Path(path)
        self.k = int(k)
        self.unknown = unknown  # the CSV's unknown columns (JSON Lines rows carry whatever the predictions have)
        self.done: set[str] = set()
        self.written = 0
        existing = resume and self.path.is_file() and self.path.stat().st_size > 0
        if existing:
            _cut_torn_tail(self.path)
            self.done = self._read_done()
        empty = not existing or self.path.stat().st_size == 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if existing else "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise ClipAppError(f"Cannot write {self.path}: {exc.strerror or exc}.") from exc
        self._last_sync = time.monotonic()
        if empty:
            self._start()

    def _start(self) -> None:
        pass

    def _read_done(self) -> set[str]:
        raise NotImplementedError

    def _rows(self, batch: PredictionBatch) -> str:
        raise NotImplementedError

    def write(self, batch: PredictionBatch) -> None:
        if self.done:
            batch = batch.select([i for i, image in enumerate(batch.images) if image not in self.done])
        if not len(batch):
            return
        self._file.write(self._rows(batch))
        self._file.flush()  # a killed process loses nothing that was flushed
        self.written += len(batch)
        if time.monotonic() - self._last_sync > FSYNC_EVERY_S:  # and a power cut at most a few seconds
            os.fsync(self._file.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class CsvPredictions(PredictionFile):
    kind = "csv"

    def _start(self) -> None:
        csv.writer(self._file).writerow(csv_header(self.k, unknown=self.unknown))
        self._file.flush()

    def _read_done(self) -> set[str]:
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return set()
            has_unknown = header[-len(UNKNOWN_COLUMNS) :] == UNKNOWN_COLUMNS
            if header == csv_header(self.k, unknown=has_unknown):
                # A file keeps its own columns: one written before the unknown columns existed (or with
                # --no-unknown) resumes without them; one with them gets empty cells if they are not computed.
                self.unknown = has_unknown
            else:
                found = (len(header) - 1 - (len(UNKNOWN_COLUMNS) if has_unknown else 0)) // 2
                raise ClipAppError(
                    f"{self.path} has the columns of top-k {found} ({','.join(header[:5])}...), "
                    f"not of --top-k {self.k}: resume with --top-k {found}, or write another file."
                )
            return {row[0] for row in reader if row}

    def _rows(self, batch: PredictionBatch) -> str:
        # Formatted a column at a time, not a Python loop per cell: 1M rows of top-5 in seconds (bench_classify).
        n, k = batch.indices.shape
        extra = len(UNKNOWN_COLUMNS) if self.unknown else 0
        cells = np.full((n, 1 + 2 * self.k + extra), "", dtype=object)
        cells[:, 0] = batch.images
        cells[:, 1 : 1 + 2 * k : 2] = batch.labels[batch.indices]
        cells[:, 2 : 2 + 2 * k : 2] = significant(batch.probs).astype(object)  # csv writes a float's shortest repr
        if extra and batch.unknown is not None:
            cells[:, -2] = np.where(batch.unknown.flag, "true", "false")
            cells[:, -1] = significant(batch.unknown.score).astype(object)
        buffer = io.StringIO()
        csv.writer(buffer).writerows(cells.tolist())
        return buffer.getvalue()


class JsonlPredictions(PredictionFile):
    kind = "jsonl"

    def _read_done(self) -> set[str]:
        done = set()
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    done.add(json.loads(line)["image"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ClipAppError(
                        f"{self.path}, line {number}: not a prediction row ({exc}); "
                        "resume only continues files this command wrote."
                    ) from exc
        return done

    def _rows(self, batch: PredictionBatch) -> str:
        return "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in batch.predictions())


def open_outputs(
    *, csv_path: Optional[str], jsonl_path: Optional[str], k: int, resume: bool, unknown: bool = False
) -> list[PredictionFile]:
    outputs: list[PredictionFile] = []
    try:
        if csv_path:
            outputs.append(CsvPredictions(csv_path, k, resume=resume, unknown=unknown))
        if jsonl_path:
            outputs.append(JsonlPredictions(jsonl_path, k, resume=resume))
    except BaseException:
        for output in outputs:
            output.close()
        raise
    return outputs


class IndexTags:
    """An output that stores predictions as tags in the index they came from (`classify --index PATH --tag`): each
    image's top-k labels with a probability of at least `min_prob`, replacing its earlier tags, committed per batch
    (a killed run keeps every finished batch). `search --tag LABEL` and the Search tab then filter by them."""

    def __init__(self, index, *, min_prob: float):
        if not 0.0 <= float(min_prob) <= 1.0:
            raise ClipAppError(f"--tag-min-prob must be between 0 and 1, not {min_prob}.")
        self.index = index
        self.min_prob = float(min_prob)
        self.done: set[str] = set()  # tagging is cheap (no file is read): a resumed run tags every image again
        self.written = 0

    def write(self, batch: PredictionBatch) -> None:
        names = batch.labels[batch.indices]
        keep = batch.probs >= self.min_prob
        tags = {
            image: [
                (str(label), float(prob)) for label, prob, ok in zip(row_names, row_probs, row_keep, strict=True) if ok
            ]
            for image, row_names, row_probs, row_keep in zip(batch.images, names, batch.probs, keep, strict=True)
        }
        self.index.set_tags(tags)
        self.index.save()
        self.written += len(batch)

    def close(self) -> None:
        self.index.save()
