"""clipapp: CLIP zero-shot classification, image search and few-shot adaptation.

The folders are the layers (docs/architecture.md): `app/` (front ends and the actions they share) over the core
(`model/`, `classify/`, `index/`, `finetune/`, `tricks/`, `viz/`) over the support (`images/`, `progress`, `lru`,
`vectors`, `units`, `storage`, `extras`, `errors`, `_compat`).
"""

from clipapp import _compat

__version__ = "0.1.0"

_compat.install()  # the pre-0.2 flat module paths, for one release
