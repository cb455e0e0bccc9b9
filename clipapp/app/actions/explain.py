"""Where each label matches in each image: region maps (clipapp/model/regions.py) for the CLI's `explain`,
/v1/explain and the Zero-shot tab, as one typed result whose `to_dict` is their JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from clipapp.errors import ClipAppError
from clipapp.images.decode import ImageSource
from clipapp.model.prompts import DEFAULT_TEMPLATES, parse_labels
from clipapp.model.regions import DEFAULT_METHOD, GRID_CELLS, RegionMaps
from clipapp.model.regions import explain as region_maps
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn


@dataclass
class Explanation:
    """Each image's region maps, in the order given: `maps[i].grids[k]` is where label k matches in image i."""

    model: str
    method: str
    labels: list[str]
    maps: list[RegionMaps]

    def to_dict(self) -> dict:
        """{"model", "method", "labels", "results": [{"image", "labels": [{"label", "grid": [[float]]}]}]}: each
        grid covers its image, rows top to bottom (docs/cli.md)."""
        return {
            "model": self.model,
            "method": self.method,
            "labels": self.labels,
            "results": [found.to_dict() for found in self.maps],
        }


def explain(
    service: ClipService,
    images: Sequence[ImageSource],
    labels: str | Sequence[str],
    *,
    names: Optional[Sequence[str]] = None,
    method: str = DEFAULT_METHOD,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    cells: int = GRID_CELLS,
    progress: Optional[ProgressFn] = None,
) -> Explanation:
    """Region maps of every image for every label. Images are decoded one at a time (paths stay paths until
    their turn), so a long list of files holds one image in memory at once; `names` name them in the JSON."""
    if not images:
        raise ClipAppError("No images given: upload or name at least one image.")
    parsed = parse_labels(labels)
    maps = list(
        region_maps(
            service, images, parsed, method=method, templates=templates, cells=cells, names=names, progress=progress
        )
    )
    return Explanation(model=service.spec, method=method, labels=parsed, maps=maps)
