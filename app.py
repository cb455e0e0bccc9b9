"""Run the clipapp web app: `python app.py [--model SPEC] [--device auto|cpu|cuda] [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from clipapp.service import ClipService
from clipapp.ui import build_app
from clipapp.ui.common import AppContext


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model spec; default $CLIPAPP_MODEL or ViT-B-32:laion2b_s34b_b79k")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", help="auto, fp32, fp16 (GPU) or bf16")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the app on the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--state-dir", default=os.environ.get("CLIPAPP_STATE_DIR", ".clipapp"),
                        help="where indexes and adapters are kept")
    parser.add_argument("--allowed-root", action="append", default=[],
                        help="a server folder the browser may index (repeatable); none by default")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    service = ClipService.load(args.model, device=args.device, precision=args.precision)
    ctx = AppContext(
        service=service,
        state_dir=Path(args.state_dir).resolve(),
        allowed_roots=tuple(Path(p).resolve() for p in args.allowed_root),
    )
    demo = build_app(ctx)
    demo.launch(server_name=args.host, server_port=args.port, show_error=False)


if __name__ == "__main__":
    main()
