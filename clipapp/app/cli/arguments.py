"""How each command's arguments are added to its parser (the model flags: clipapp/app/options.py). Nothing heavy is
imported here: `--help` and usage errors must stay fast."""

from __future__ import annotations

import argparse

from clipapp.app.cli.figures import MAX_BARS_IMAGES
from clipapp.errors import ClipAppError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", help="image files and folders (searched recursively, as index does)")
    p.add_argument("--index", help="classify every image of this index from its stored vectors (no file is read)")
    p.add_argument("--labels", help='candidate labels, comma separated: "cat,dog,car" (not needed with --adapter)')
    p.add_argument(
        "--templates", default="simple", help='simple (7), openai (80), none, or one template like "a photo of a {}."'
    )
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--adapter", help="a fine-tuned adapter (.safetensors with its .json) to classify with")
    p.add_argument("--csv", help="write image,label,prob,label_2,prob_2,... rows to this file as results arrive")
    p.add_argument("--jsonl", help="write one JSON object per image to this file as results arrive")
    p.add_argument(
        "--resume", action="store_true", help="skip images already in the --csv/--jsonl file, append the rest"
    )
    p.add_argument(
        "--tag",
        action="store_true",
        help="with --index: store each image's top-k labels (prob >= --tag-min-prob) as tags in the "
        "index, for search --tag LABEL",
    )
    p.add_argument("--tag-min-prob", type=float, default=0.5, help="smallest probability stored as a tag (0..1)")
    p.add_argument("--ray", help="encode on a Ray cluster: auto (a running one, else local) or HOST:PORT")
    p.add_argument("--out", help=f"save the top-k bars as PNG (up to {MAX_BARS_IMAGES} images)")
    p.add_argument(
        "--no-unknown",
        dest="unknown",
        action="store_false",
        help='do not say per image whether it matches none of the labels ("unknown", "unknown_score")',
    )


def similarity(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+")
    p.add_argument("--texts", nargs="+", required=True)
    p.add_argument("--out", help="save the heatmap as PNG")


def explain(p: argparse.ArgumentParser) -> None:
    # the method names and grid size are repeated from clipapp.model.regions: importing it (torch) slows --help
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", required=True, help='labels to locate, comma separated: "sneaker,bag"')
    p.add_argument(
        "--templates", default="simple", help='simple (7), openai (80), none, or one template like "a photo of a {}."'
    )
    p.add_argument(
        "--method",
        choices=("crops", "occlusion", "gradcam"),
        default="crops",
        help="crops (default: the one that points right, docs/benchmarks.md), occlusion, or gradcam (ResNet/ViT)",
    )
    p.add_argument("--cells", type=_positive_int, default=8, help="grid cells along each image's long side")
    p.add_argument("--out", help="write one overlay PNG per image and label into this folder")


def index(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", help="folder of images, searched recursively")
    p.add_argument("--index", required=True, help="index folder (created if missing)")
    archive = p.add_mutually_exclusive_group()
    archive.add_argument(
        "--compact", action="store_true", help="rewrite the vector file without the rows of removed images"
    )
    archive.add_argument("--backup", metavar="DEST", help="write a consistent copy to the new folder DEST")
    archive.add_argument(
        "--from-embeddings",
        metavar="DIR",
        help="build or extend the index from an embedding folder (img_emb/*.npy + metadata/, clip-retrieval's "
        "layout, or `export`), encoding no image",
    )
    p.add_argument(
        "--ray", help="embed on a Ray cluster: auto (a running one, else local) or HOST:PORT / ray://HOST:PORT"
    )
    p.add_argument(
        "--max-index-memory",
        help="RAM the search structure may use, e.g. 1GB (kept with the index); "
        "over it, compressed codes with exact re-rank",
    )


def export(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", help="new folder for img_emb/*.npy, metadata/* and clipapp.json")
    p.add_argument("--index", required=True)
    p.add_argument(
        "--format",
        choices=("parquet", "npy"),
        default="parquet",
        help="metadata as parquet (clip-retrieval's; needs clipapp[parquet]) or JSON lines (numpy only)",
    )


def search(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help='e.g. "a dog in the snow" or "dog + snow - grass" (img:PATH terms allowed)')
    query.add_argument("--image", help="an image file to find similar images to")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument(
        "--threshold", "--min-score", type=float, help="only results with at least this cosine score (the cut-off)"
    )
    p.add_argument("--templates", default="simple", help="templates for text terms: simple, openai, none, or one")
    p.add_argument("--tag", help="only images tagged with this label (tags are written by classify --index)")
    p.add_argument("--after", metavar="YYYY-MM-DD", help="only images taken on or after this day (EXIF, else mtime)")
    p.add_argument("--before", metavar="YYYY-MM-DD", help="only images taken on or before this day (EXIF, else mtime)")
    p.add_argument("--under", metavar="FOLDER", help="only images with a path (or an alias) under this folder")
    p.add_argument(
        "--sort",
        choices=("relevance", "date"),
        default="relevance",
        help="date: the top k results (above --min-score) newest first",
    )


def duplicates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", help="the index to search for near-duplicates (not needed with --undo)")
    p.add_argument(
        "--threshold",
        type=float,
        help="smallest cosine similarity of two copies, in (0, 1] (default: measured, "
        "docs/benchmarks.md); a perceptual hash confirms each pair",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", help="also write group,keep,path,size,width,height,date,similarity rows to this file")
    out.add_argument(
        "--move-to", metavar="DIR", help="move every group's non-keepers under DIR, with an undo log (CSV) there"
    )
    out.add_argument("--undo", metavar="LOG", help="move back the files an undo log written by --move-to lists")


def tag(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", help="indexed images to tag (or --from FILE)")
    p.add_argument("--index", required=True, help="the index the images are in (where the tag is stored)")
    p.add_argument("--tag", required=True, help="the tag to give them, e.g. holidays (their other tags stay)")
    p.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="read the images from FILE, one path per line (the map page's selection, `map --out`)",
    )


def finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", nargs="?", help="folder of class folders (class names = folder names), or a .zip")
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME=IMAGE[,IMAGE...]",
        help='one class and its images, e.g. --class "sneaker=a.png,b.png"; repeat for every class',
    )
    p.add_argument("--from-csv", metavar="FILE", help="a CSV of path,label rows (paths relative to the CSV)")
    p.add_argument(
        "--from-index",
        metavar="PATH",
        help="the image index the --class / --from-csv paths were "
        "found in (search results); checked to exist and hold images",
    )
    p.add_argument("--out", required=True, help="adapter path: writes OUT.safetensors and OUT.json")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_settings(p)


def evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir")
    p.add_argument("--adapter", help="an adapter written by finetune")
    p.add_argument("--templates", default="simple", help="zero-shot templates: simple, openai, none, or one")
    p.add_argument("--out", help="save the confusion matrix (row-normalised) as PNG")
    p.add_argument(
        "--suspects",
        metavar="FILE.csv",
        help="write every image whose folder label the model doubts, most suspect first: image,given,predicted,score",
    )
    p.add_argument(
        "--suspects-top", type=_positive_int, default=100, metavar="N", help="suspects listed in --json (default 100)"
    )


# -- fine-tune settings: one flag per FinetuneConfig field ---------------------------------------------------------
_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _setting_type(spec):
    """argparse's `type=` for a setting: the setting's own parsing, its refusal as argparse's usage error."""

    def parse(text: str):
        try:
            return spec.parse(text)
        except ClipAppError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per `FinetuneConfig` setting, from its metadata: name, help, choices, type and the default shown."""
    from clipapp.finetune.config import settings

    group = parser.add_argument_group("fine-tune settings (FinetuneConfig; 'auto' where the default is automatic)")
    for spec in settings().values():
        help_text = spec.describe().replace("%", "%%")
        if spec.type is bool:
            action = group.add_argument(
                spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=spec.default
            )
            action.help = help_text  # after: Python 3.11's BooleanOptionalAction would append the default again
            continue
        group.add_argument(
            spec.flag,
            dest=spec.name,
            type=_setting_type(spec),
            choices=spec.setting.choices or None,
            default=spec.default,
            metavar=None if spec.setting.choices else spec.setting.metavar or _METAVARS[spec.type],
            help=help_text,
        )


def finetune_config(args: argparse.Namespace):
    """The parsed `finetune` flags -> the config: one flag per setting, named after its field (`_add_settings`)."""
    from clipapp.finetune.config import FinetuneConfig, settings

    return FinetuneConfig.from_settings({name: getattr(args, name) for name in settings()})


def collection_map(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="the index to draw (its map is cached beside it until it changes)")
    p.add_argument("--out", help="write the map as a self-contained HTML page (hover: thumbnail, click: open)")
    p.add_argument("--labels", help="name clusters from these labels, comma separated (default: a built-in list)")
    p.add_argument("--clusters", type=_positive_int, help="number of k-means clusters (default: sqrt(n/2), at most 30)")


def models(p: argparse.ArgumentParser) -> None:
    """No flags of its own: --model marks the model it names (default: $CLIPAPP_MODEL or the default)."""
