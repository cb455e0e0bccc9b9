"""The real models a user would pick, as data: each one's spec, published ImageNet zero-shot accuracy (cited), the
weights' license (cited), and what it costs on this project's 2-core CPU, measured by bench/bench_models.py with
random weights (the architecture's cost; the weights do not change it) and stored in `catalog_figures.json` with
the date and the machine. `clipapp models` and /v1/models print it (clipapp/app/actions/models.py).

Nothing heavy is imported here (no torch, no open_clip): `--help` and the catalog stay light.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

FIGURES_FILE = Path(__file__).with_name("catalog_figures.json")  # written by bench/bench_models.py --write

OPENCLIP_RESULTS = "open_clip docs/openclip_results.csv (mlfoundations/open_clip @ 89fb801, column 'ImageNet 1k')"
MOBILECLIP2_README = "apple/ml-mobileclip README.md (@ 4144bb1), MobileCLIP2 table, 'IN-1k Zero-Shot Top-1 Acc.'"
SIGLIP2_README = (
    "google-research/big_vision big_vision/configs/proj/image_text/README_siglip2.md, row 'SigLIP 2 B/16 224', "
    "'INet 0-shot'"
)
APPLE_LICENSE = (
    "Apple ML Research Model license (apple-amlr: apple/ml-mobileclip LICENSE_MODELS; the timm/MobileCLIP2-*-OpenCLIP "
    "model cards say apple-amlr): non-commercial research only"
)


@dataclass(frozen=True)
class CatalogModel:
    """One model of the table: what is published about it (cited) and whether it needs the `hf` extra."""

    spec: str
    summary: str
    imagenet_top1: Optional[float]  # published zero-shot top-1 on ImageNet-1k, percent; None when none was found
    accuracy_source: str
    license: str  # the weights' license, as its model card names it
    license_source: str
    open_license: bool  # may anyone use the weights, commercially too (the default must be such a model)
    needs_hf: bool = False  # a Hugging Face tokenizer or text tower: the `hf` extra (transformers)

    @property
    def name(self) -> str:
        return self.spec.partition(":")[0]


MODELS: tuple[CatalogModel, ...] = (
    CatalogModel(
        "ViT-B-32:laion2b_s34b_b79k",
        "OpenCLIP ViT-B/32 on LAION-2B (the default until this table)",
        66.56,
        OPENCLIP_RESULTS,
        "MIT",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K model card (license: mit)",
        True,
    ),
    CatalogModel(
        "ViT-B-32-256:datacomp_s34b_b86k",
        "ViT-B/32 at 256 px on DataComp-1B (rclip's model): the default",
        72.81,
        OPENCLIP_RESULTS,
        "MIT",
        "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K model card (license: mit)",
        True,
    ),
    CatalogModel(
        "MobileCLIP2-S0:dfndr2b",
        "Apple's smallest MobileCLIP2 (11.4 M image + 42.4 M text parameters)",
        71.5,
        MOBILECLIP2_README,
        "apple-amlr",
        APPLE_LICENSE,
        False,
    ),
    CatalogModel(
        "MobileCLIP2-S2:dfndr2b",
        "MobileCLIP2-S2 (35.7 M image + 63.4 M text parameters)",
        77.2,
        MOBILECLIP2_README,
        "apple-amlr",
        APPLE_LICENSE,
        False,
    ),
    CatalogModel(
        "ViT-B-16-SigLIP2:webli",
        "Google's SigLIP 2 ViT-B/16 at 224 px (sigmoid probabilities, Gemma tokenizer, 256k vocabulary)",
        78.2,
        SIGLIP2_README,
        "Apache-2.0",
        "google/siglip2-base-patch16-224 model card (license: apache-2.0); big_vision README: code Apache-2.0, "
        "other materials CC-BY-4.0",
        True,
        needs_hf=True,
    ),
    CatalogModel(
        "ViT-L-14:datacomp_xl_s13b_b90k",
        "OpenCLIP ViT-L/14 on DataComp-XL: the most accurate here, and the slowest",
        79.21,
        OPENCLIP_RESULTS,
        "MIT",
        "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K model card (license: mit)",
        True,
    ),
    CatalogModel(
        "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k",
        "multilingual: labels and queries in ~100 languages (XLM-RoBERTa text tower, LAION-5B)",
        62.36,
        OPENCLIP_RESULTS,
        "MIT",
        "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k model card (license: mit)",
        True,
        needs_hf=True,
    ),
)


def find(spec: str) -> Optional[CatalogModel]:
    return next((model for model in MODELS if model.spec == spec), None)


def hf_extra_installed() -> bool:
    """Whether the `hf` extra's packages are importable (looked up, not imported: transformers takes seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in ("transformers", "tokenizers"))


@lru_cache(maxsize=1)
def measured_figures() -> dict[str, Any]:
    """bench/bench_models.py's figures: {"date", "machine", "method", "models": {spec: {figure: value}}}; empty
    models when the file is missing (a checkout where the bench never ran)."""
    if not FIGURES_FILE.is_file():
        return {"date": None, "machine": None, "method": None, "models": {}}
    return json.loads(FIGURES_FILE.read_text(encoding="utf-8"))
