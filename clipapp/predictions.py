"""Prediction files: CSV (`image,label,prob,label_2,prob_2,...`) and JSON Lines, written as results arrive, resumable.

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
from typing import Optional, Sequence

from clipapp.classify import Prediction
from clipapp.errors import ClipAppError

FSYNC_EVERY_S = 5.0


def csv_header(k: int) -> list[str]:
    return ["image", "label", "prob"] + [name for i in range(2, k + 1) for name in (f"label_{i}", f"prob_{i}")]


def _format_prob(prob: float) -> str:
    return f"{prob:.6g}"  # 6 significant digits: sigmoid probabilities can be tiny


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

    def __init__(self, path: str | os.PathLike, k: int, *, resume: bool = False):
        self.path = Path(path)
        self.k = int(k)
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

    def _rows(self, predictions: Sequence[Prediction]) -> str:
        raise NotImplementedError

    def write(self, predictions: Sequence[Prediction]) -> None:
        new = [p for p in predictions if p.image not in self.done]
        if not new:
            return
        self._file.write(self._rows(new))
        self._file.flush()  # a killed process loses nothing that was flushed
        self.written += len(new)
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
        csv.writer(self._file).writerow(csv_header(self.k))
        self._file.flush()

    def _read_done(self) -> set[str]:
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return set()
            if header != csv_header(self.k):
                found = (len(header) - 1) // 2
                raise ClipAppError(f"{self.path} has the columns of top-k {found} ({','.join(header[:5])}...), "
                                   f"not of --top-k {self.k}: resume with --top-k {found}, or write another file.")
            return {row[0] for row in reader if row}

    def _rows(self, predictions: Sequence[Prediction]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        width = 2 * self.k
        rows = []
        for p in predictions:
            cells = [p.image]
            for label, prob in p.top:
                cells += (label, _format_prob(prob))
            rows.append(cells + [""] * (width + 1 - len(cells)))  # fewer labels than k: empty cells
        writer.writerows(rows)
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
                    raise ClipAppError(f"{self.path}, line {number}: not a prediction row ({exc}); "
                                       "resume only continues files this command wrote.") from exc
        return done

    def _rows(self, predictions: Sequence[Prediction]) -> str:
        return "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in predictions)


def open_outputs(*, csv_path: Optional[str], jsonl_path: Optional[str], k: int, resume: bool) -> list[PredictionFile]:
    outputs: list[PredictionFile] = []
    try:
        if csv_path:
            outputs.append(CsvPredictions(csv_path, k, resume=resume))
        if jsonl_path:
            outputs.append(JsonlPredictions(jsonl_path, k, resume=resume))
    except BaseException:
        for output in outputs:
            output.close()
        raise
    return outputs
