"""Search filters: one `SearchFilter` (date range, folder, tag) turned into the SQL that lists the allowed content ids,
and `SearchOptions` (k, min score, filter, sort): the one record every search front end passes down.

An image's date is its EXIF capture date (`paths.captured_at`, 'YYYY-MM-DD HH:MM:SS') or, where it has none, its
file's modification time (`paths.mtime`) in local time. `after`/`before` are inclusive whole days. `under` is a
folder: every indexed path below it counts, aliases included (a content with any path under it is allowed), and
`/photos/2020` does not match `/photos/2020b`. `tag` is the label written by `classify --index`.

The SQL uses only indexed columns (store.py's FILTER_INDEXES): the date range is two index ranges joined by OR
(captured_at, and mtime of the undated rows through a partial index), the folder a range on the unique path index,
the tag the tags_by_label index; so listing 10k allowed ids out of 1M paths reads ~10k index entries, not the table
(bench/bench_filters.py, docs/benchmarks.md).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from clipapp.errors import ClipAppError

SORTS = ("relevance", "date")
# Past every 'YYYY-MM-DD HH:MM:SS' and every path continuation: the top of a range on a TEXT column.
_TEXT_TOP = "\U0010ffff"
# The sortable date of a path: its EXIF date, else its mtime as local 'YYYY-MM-DD HH:MM:SS' (same form, same zone).
DATE_SQL = "COALESCE(captured_at, datetime(mtime, 'unixepoch', 'localtime'))"


def parse_day(text: str | dt.date | None, what: str) -> dt.date | None:
    """A `YYYY-MM-DD` day (None/'' stays None); anything else is a ClipAppError naming the flag."""
    if text is None or isinstance(text, dt.date):
        return text
    text = str(text).strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else _bad_day(text, what)
    except ValueError:
        return _bad_day(text, what)


def _bad_day(text: str, what: str) -> dt.date:
    raise ClipAppError(f"{what} {text!r} is not a date; write it as YYYY-MM-DD, e.g. 2023-07-14.")


def folder_prefix(folder: str) -> str:
    """The path prefix of everything under `folder`: absolute, user expanded, ending in one separator."""
    if not folder.strip():
        raise ClipAppError("The folder to search under is empty; give a folder, e.g. --under ~/Pictures/2023.")
    path = os.path.abspath(os.path.expanduser(folder.strip()))
    return path if path.endswith(os.sep) else path + os.sep


def _local_midnight(day: dt.date) -> float:
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


@dataclass(frozen=True)
class SearchFilter:
    """Which images a search may return; every field None means all of them. Build it with `SearchFilter.parse`
    from the strings a user typed (it checks them), or directly with dates."""

    after: dt.date | None = None  # inclusive
    before: dt.date | None = None  # inclusive
    under: str | None = None  # a path prefix ending in a separator (see folder_prefix)
    tag: str | None = None

    @classmethod
    def parse(
        cls, *, after: Any = None, before: Any = None, under: str | None = None, tag: str | None = None
    ) -> SearchFilter:
        """The filter of a user's input: days as `YYYY-MM-DD`, `under` a folder; blanks mean no filter."""
        start, end = parse_day(after, "--after"), parse_day(before, "--before")
        if start is not None and end is not None and start > end:
            raise ClipAppError(f"--after {start} is later than --before {end}; no image can be in between.")
        prefix = folder_prefix(under) if under is not None and under.strip() else None
        return cls(start, end, prefix, tag.strip() if tag is not None and tag.strip() else None)

    @property
    def empty(self) -> bool:
        return self.after is None and self.before is None and self.under is None and self.tag is None

    def where(self, *, per_row: bool = False) -> tuple[str, list[Any]]:
        """(SQL condition over the `paths` table, its arguments); "1" when nothing is filtered. `per_row`: for
        checking a few given rows (store.allowed_among), the tag is looked up per row in the tags' primary key
        rather than listed (a wide tag's listing is what the candidate check avoids)."""
        terms: list[str] = []
        args: list[Any] = []
        if self.after is not None or self.before is not None:
            low = self.after.isoformat() if self.after else ""
            # before is inclusive: every time of that day sorts below the next day's 'YYYY-MM-DD'
            high = (self.before + dt.timedelta(days=1)).isoformat() if self.before else _TEXT_TOP
            low_t = _local_midnight(self.after) if self.after else float("-inf")
            high_t = _local_midnight(self.before + dt.timedelta(days=1)) if self.before else float("inf")
            terms.append(
                "((captured_at >= ? AND captured_at < ?) OR (captured_at IS NULL AND mtime >= ? AND mtime < ?))"
            )
            args += [low, high, low_t, high_t]
        if self.under is not None:
            terms.append("(path >= ? AND path < ?)")
            args += [self.under, self.under + _TEXT_TOP]
        if self.tag is not None and per_row:
            terms.append("EXISTS (SELECT 1 FROM tags WHERE tags.content_id = paths.content_id AND tags.label = ?)")
            args.append(self.tag)
        elif self.tag is not None:
            terms.append("content_id IN (SELECT content_id FROM tags WHERE label = ?)")
            args.append(self.tag)
        return (" AND ".join(terms) or "1"), args

    def to_dict(self) -> dict[str, Any]:
        """{"after", "before", "under", "tag"} (null where unset), as docs/api.md shows it."""
        return {
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
            "under": self.under,
            "tag": self.tag,
        }


def check_sort(sort: str | None) -> str:
    """'relevance' (None too) or 'date'; anything else is a ClipAppError."""
    sort = (sort or "relevance").strip().lower()
    if sort not in SORTS:
        raise ClipAppError(f"Sort by {sort!r}? Choose one of: {', '.join(SORTS)}.")
    return sort


@dataclass(frozen=True)
class SearchOptions:
    """What a search asks for, checked once here: at most `k` hits (k >= 1), each scoring at least `min_score`
    (None: no cut-off), among the images `filter` allows (its `tag` included), ordered by `sort` ("relevance" or
    "date": the top k by relevance, newest first). Every front end (CLI, /v1/search, the Search tab) builds one."""

    k: int = 10
    min_score: float | None = None
    filter: SearchFilter = field(default_factory=SearchFilter)
    sort: str = "relevance"

    def __post_init__(self) -> None:
        if int(self.k) < 1:
            raise ClipAppError(f"k must be at least 1, not {self.k}.")
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "min_score", None if self.min_score is None else float(self.min_score))
        object.__setattr__(self, "filter", self.filter if self.filter is not None else SearchFilter())
        object.__setattr__(self, "sort", check_sort(self.sort))

    @classmethod
    def of(
        cls,
        *,
        k: int = 10,
        threshold: float | None = None,
        tag: str | None = None,
        filter: SearchFilter | None = None,
        sort: str | None = "relevance",
    ) -> SearchOptions:
        """The options of the loose keywords (`ImageIndex.search`'s): `tag`, when given, replaces the filter's."""
        chosen = filter or SearchFilter()
        if tag is not None:
            chosen = replace(chosen, tag=tag)
        return cls(k, threshold, chosen, sort or "relevance")


def resolve_options(
    options: SearchOptions | None,
    *,
    k: int = 10,
    threshold: float | None = None,
    tag: str | None = None,
    filter: SearchFilter | None = None,
    sort: str = "relevance",
) -> SearchOptions:
    """`options`, or the record of the loose keywords; both at once is a ClipAppError (which would win?)."""
    if options is None:
        return SearchOptions.of(k=k, threshold=threshold, tag=tag, filter=filter, sort=sort)
    if (k, threshold, tag, filter, sort) != (10, None, None, None, "relevance"):
        raise ClipAppError("Give the search options either as options= or as keywords (k, threshold, ...), not both.")
    return options
