"""The ``litkit`` command: ``litkit serve file.py:ClassName`` and ``litkit demo``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import shlex
import sys
from typing import Any

__all__ = ["main", "load_api"]


def load_api(target: str) -> Any:
    """Load ``path/to/file.py:Name`` or ``package.module:Name``; instantiate Name if it is a class.

    A file is loaded as a module that cloudpickle sends to workers by value, and its folder is put
    on ``sys.path`` so its own imports work in the workers too.

    Raises:
        ValueError: ``target`` has no ``:Name`` part, or the file or attribute does not exist.
    """
    import cloudpickle

    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"expected FILE.py:ClassName or module:ClassName, got {target!r}")
    if path.endswith(".py") or os.sep in path:
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = "litkit_app_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {path} as Python source")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        cloudpickle.register_pickle_by_value(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(path)
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise ValueError(f"{path} has no attribute {name!r}") from None
    return obj() if isinstance(obj, type) else obj


def _parse_devices(text: str) -> int | list[int]:
    """``--devices 2`` is a count, ``--devices 0,2`` (or ``--devices 1,``) a list of GPU indices."""
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count such as 2 or indices such as 0,2, got {text!r}") from None


# serve() options offered as flags; their defaults are read from serve() itself, never repeated.
_SERVE_FLAGS: dict[str, tuple[Any, str]] = {
    "host": (str, "address to listen on"),
    "port": (int, "TCP port, 0 for any free one"),
    "workers": (int, "worker processes"),
    "timeout": (float, "seconds to the first response byte before 504"),
    "max_queue": (int, "requests that may wait for a worker"),
    "max_body_size": (int, "largest request body in bytes"),
    "start_timeout": (float, "seconds a worker may take to start"),
    "max_batch_size": (int, "requests a worker may take at once as one batch"),
    "batch_timeout": (float, "seconds a partial batch may wait for more requests"),
    "accelerator": (str, "auto, cpu or cuda"),
    "devices": (_parse_devices, "GPUs to use: a count (2) or indices (0,2)"),
    "workers_per_device": (int, "workers on each device"),
    "max_concurrency": (int, "requests each worker runs at once (async predict only)"),
}


def _add_serve_options(parser: argparse.ArgumentParser, flags: dict[str, tuple[Any, str]]) -> None:
    from .server import serve

    defaults = inspect.signature(serve).parameters
    for name, (kind, text) in flags.items():
        default = defaults[name].default
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=f"{text} (default: {default})")


def _serve_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _SERVE_FLAGS}


def _curl(url: str, body: Any, stream: bool) -> str:
    flags = "-N " if stream else ""
    return f"curl {flags}-X POST {url} -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litkit", description="Serve a Python model over HTTP.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve a LitAPI class from a file or module")
    serve_parser.add_argument("target", help="path/to/file.py:ClassName or package.module:ClassName")
    _add_serve_options(serve_parser, {"api_path": (str, "path of the predict endpoint"), **_SERVE_FLAGS})
    demo_parser = commands.add_parser("demo", help="serve the built-in streaming demo and show how to call it")
    _add_serve_options(demo_parser, _SERVE_FLAGS)
    args = parser.parse_args(argv)

    from .errors import LitkitError
    from .server import block_until_interrupted, serve

    try:
        if args.command == "demo":
            from .demo import TokenStreamer

            api: Any = TokenStreamer()
            server = serve(api, **_serve_options(args))
            example: Any = {"prompt": "hello from litkit", "max_tokens": 8, "delay": 0.2}
        else:
            api = load_api(args.target)
            server = serve(api, api_path=args.api_path, **_serve_options(args))
            example = {"input": 1}
    except (LitkitError, ImportError, ValueError, TypeError, OSError) as error:
        print(f"litkit: error: {error}", file=sys.stderr)
        return 1
    endpoint = server.url + server.api_path
    lines = [f"litkit: serving {type(api).__name__} at {endpoint} ({'streaming' if server.stream_mode else 'JSON'})"]
    lines.append("  call it:  " + _curl(endpoint, example, server.stream_mode))
    if args.command == "serve":
        lines[-1] += "   (send what your decode_request expects)"
    if server.stream_mode:
        lines.append("  as SSE:   " + _curl(endpoint, example, True) + " -H 'Accept: text/event-stream'")
    lines.append(f"  health:   curl {server.url}/health")
    lines.append("Press Ctrl+C to stop.")
    block_until_interrupted(server, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
