"""`melfusion app`: the local web app (gradio, the optional extra `app`); the page is commands/webapp.py."""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from pathlib import Path

from melfusion.commands.generate import check_output_folder
from melfusion.errors import MelfusionInputError
from melfusion.loading import check_model_folder, resolve_device


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "app",
        help="local web app: music from an image and a text prompt in the browser",
        description="Serve a local web page that makes music from an image and a text prompt (needs "
        "pip install 'melfusion[app]'). Nothing leaves this machine: no share link, no analytics.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: a free port)")
    p.add_argument(
        "--model", default=None, help="pipeline folder offered (and chosen) beside the embedded model"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--out-dir", default=None, help="folder for the clips (default: a new temporary folder)")
    p.set_defaults(func=run)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(args: argparse.Namespace) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no calls home
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise MelfusionInputError("melfusion app needs gradio: pip install 'melfusion[app]'") from None
    from melfusion.commands.webapp import Studio, build_app, theme

    if not 0 <= args.port <= 65535:
        raise MelfusionInputError(f"--port must be in [0, 65535], got {args.port}")
    if args.model is not None:
        check_model_folder(args.model)
    device = resolve_device(args.device)
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="melfusion-app-"))
    check_output_folder(out_dir, f"--out-dir {out_dir}")
    port = args.port or free_port(args.host)
    print(f"melfusion app: clips go to {out_dir}")
    demo = build_app(Studio(device, out_dir), args.model)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=port,
        share=False,
        allowed_paths=[str(out_dir)],
        theme=theme(),
        ssr_mode=False,
        mcp_server=False,
        footer_links=["settings"],
    )
    return 0
