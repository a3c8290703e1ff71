"""The ``litkit`` command: ``litkit serve file.py:ClassName`` and ``litkit demo``."""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import inspect
import json
import os
import shlex
import signal
import sys
from typing import Any

__all__ = ["main", "load_api"]


def load_api(target: str) -> Any:
    """Load ``path/to/file.py:Name`` or ``package.module:Name``; instantiate Name if it is a class.

    A file is loaded as a module that cloudpickle sends to workers by value, and its folder is put
    on ``sys.path`` so its own imports work in the workers too. A ``litkit.run()`` in the file's body
    serves nothing (``litkit.server.terminal.loading_for_command``).

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
        # By value before the body runs: an object the body itself serves must reach the workers,
        # which cannot import this file's made-up module name.
        cloudpickle.register_pickle_by_value(module)
        from .server.terminal import loading_for_command

        with loading_for_command(os.path.basename(path)):
            spec.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.reload(sys.modules[path]) if path in sys.modules else importlib.import_module(path)
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise ValueError(f"{path} has no attribute {name!r}") from None
    return obj() if isinstance(obj, type) else obj


# Help for each serve() option. Every keyword-only parameter of serve() becomes a flag; its default
# is read from serve()'s signature and its type from the annotation (_PARSERS), never repeated here.
_SERVE_FLAGS = {
    "host": "address to listen on",
    "port": "TCP port, 0 for any free one",
    "workers": "worker processes",
    "stream": "auto: stream when predict is a generator; on/off to insist",
    "api_path": "path of the predict endpoint",
    "timeout": "seconds to the first response byte before 504; none for no limit",
    "queue_timeout": "seconds a request may wait for a worker before 504; none for no limit",
    "max_queue": "requests that may wait for a worker",
    "max_body_size": "largest request body in bytes",
    "start_timeout": "seconds a worker may take to start",
    "max_batch_size": "requests a worker may take at once as one batch",
    "batch_timeout": "seconds a partial batch may wait for more requests",
    "accelerator": "auto, cpu or cuda",
    "devices": "GPUs to use: a count (2) or indices (0,2)",
    "workers_per_device": "workers on each device; none: as many as --workers",
    "max_concurrency": "requests each worker runs at once (async predict only)",
    "spec": "a protocol to speak instead of litkit's own: openai (chat completions)",
    "api_key": "key callers must send; auto generates one (required off loopback)",
    "cors_origins": "comma-separated web origins whose pages may call the server",
    "cancel_grace": "seconds a cancelled request's worker may keep running before it is killed",
    "client_timeout": "seconds a client may take to send its request or read a response part",
    "backend": "local (this process and its workers) or ray (Ray Serve; pip install 'litkit[ray]')",
}
# serve() options that take a Python object, which a command line cannot give.
_NOT_FLAGS = ("on_log",)


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _parse_devices(text: str) -> int | list[int] | None:
    """``--devices 2`` is a count, ``--devices 0,2`` (or ``--devices 1,``) a list of GPU indices."""
    try:
        if text.lower() == "none":
            return None
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count such as 2 or indices such as 0,2, got {text!r}") from None


def _auto_bool(text: str) -> bool | None:
    choices = {"auto": None, "on": True, "true": True, "off": False, "false": False}
    if text.lower() not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return choices[text.lower()]


def _optional_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _origins(text: str) -> list[str]:
    return [origin for origin in text.split(",") if origin]


def _spec(text: str) -> Any:
    from .specs import OpenAIChat

    specs = {"none": None, "openai": OpenAIChat()}
    if text.lower() not in specs:
        raise argparse.ArgumentTypeError(f"expected openai or none, got {text!r}")
    return specs[text.lower()]


# serve()'s annotations (strings: it uses `from __future__ import annotations`) -> argparse types.
_PARSERS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "float | None": _optional_float,
    "int | None": _optional_int,
    "int | list[int] | None": _parse_devices,
    "bool | None": _auto_bool,
    "Spec | None": _spec,
    "str | None": _optional_str,
    "Sequence[str]": _origins,
}


def serve_parameters() -> dict[str, inspect.Parameter]:
    """serve()'s keyword-only parameters, each of which is a flag."""
    from .server import serve

    return {name: p for name, p in inspect.signature(serve).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_FLAGS}


def _add_serve_options(parser: argparse.ArgumentParser, leave_out: tuple[str, ...] = ()) -> None:
    for name, parameter in serve_parameters().items():
        if name in leave_out:
            continue
        kind = _PARSERS.get(str(parameter.annotation))
        if kind is None:
            raise RuntimeError(f"serve() option {name} has the type {parameter.annotation}, which the CLI cannot parse; add it to litkit.cli._PARSERS")
        default = parameter.default
        shown = {None: "auto" if name == "stream" else "none"}.get(default, default)
        text = _SERVE_FLAGS.get(name, name.replace("_", " "))
        metavar = {
            _auto_bool: "auto|on|off", _spec: "openai|none", _optional_float: "SECONDS|none", _optional_int: "N|none",
            _parse_devices: "N|I,J,...", _optional_str: "KEY|auto|none", _origins: "ORIGIN,...",
        }.get(kind)
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, metavar=metavar, help=f"{text} (default: {shown})")


def _serve_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in serve_parameters() if hasattr(args, name)}


def _curl(url: str, body: Any, stream: bool, api_key: str | None = None) -> str:
    flags = "-N " if stream else ""
    auth = f" -H {shlex.quote('Authorization: Bearer ' + api_key)}" if api_key else ""
    return f"curl {flags}-X POST {url}{auth} -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"


def _how_to_call(server: Any, example: Any, hint: str) -> str:
    """The banner: per endpoint a "serving" line and a ready-to-paste curl line; then health, metrics."""
    from .server.terminal import banner

    key = server.api_key
    lines = []
    if key:
        lines.append(f"litkit: api key:  {key}   (send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")
    for path, serving_line in zip(server.paths, banner(server).splitlines()):
        info = server.endpoint_info(path)
        endpoint = server.url + path
        lines.append(serving_line)
        if info["spec"] == "openai-chat":
            from .specs import OpenAIChat

            lines.append("  call it:  " + _curl(endpoint, OpenAIChat().example_request(info["model"]), True, key))
            base = endpoint.removesuffix("/chat/completions")
            lines.append(f"  openai:   openai.OpenAI(base_url={base!r}, api_key={key or 'unused'!r})")
            continue
        lines.append("  call it:  " + _curl(endpoint, example, info["stream"], key) + hint)
        if info["stream"]:
            lines.append("  as SSE:   " + _curl(endpoint, example, True, key) + " -H 'Accept: text/event-stream'")
    lines.append(f"  page:     {server.page_url}   (open it in a browser to run each endpoint and watch streams arrive)")
    lines.append(f"  health:   curl {server.url}/health")
    lines.append(f"  metrics:  curl {server.url}/metrics")
    return "\n".join(lines)


class _Reloader:
    """Watches the file of a ``litkit serve`` target; when it changes, loads the API again and
    serves it on the same port as a re-run does: the new workers start while the old ones answer,
    and the old ones stop once they have finished their requests."""

    def __init__(self, target: str, options: dict[str, Any], announce: Any) -> None:
        self.target = target
        self.path = _source_file(target)
        self.options = options
        self.announce = announce
        self.stamp = _stamp(self.path)

    def __call__(self, server: Any) -> Any:
        stamp = _stamp(self.path)
        if stamp == self.stamp:
            return server
        self.stamp = stamp
        from .errors import LitkitError
        from .server.terminal import serve_for_a_terminal

        try:
            api = load_api(self.target)
        except Exception as error:  # noqa: BLE001 - any error in the user's file: keep serving the old code
            print(f"litkit: reload failed, still serving the previous version: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return server
        try:
            new = serve_for_a_terminal(api, **{**self.options, "port": server.port})
        except (LitkitError, ValueError, TypeError, OSError) as error:
            # serve() starts the new version beside the old one (a re-run), which serves on if it fails.
            still = "still serving the previous version" if server.state == "serving" else "nothing is served until the file is fixed"
            print(f"litkit: reload failed, {still}: {error}", file=sys.stderr, flush=True)
            return server
        print("litkit: reloaded " + self.path, flush=True)
        print(self.announce(new), flush=True)
        return new


def _source_file(target: str) -> str:
    path = target.rpartition(":")[0]
    if path.endswith(".py") or os.sep in path:
        return os.path.abspath(path)
    spec = importlib.util.find_spec(path)
    if spec is None or not spec.origin:
        raise ValueError(f"cannot find the source file of {path} to watch for --reload")
    return spec.origin


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None  # an editor may replace the file; the next poll sees the new one
    return info.st_mtime_ns, info.st_size


_SERVE_HELP = """\
Serve a litkit.LitAPI class (or a dict of path: API) from a file or a module, until Ctrl+C.
The file's body runs once, in this process; workers never run it again.

examples:
  litkit serve app.py:Echo --port 8000 --workers 2
  litkit serve mypackage.models:Classifier --max-batch-size 8 --batch-timeout 0.01
  litkit serve chat.py:Chat --spec openai --reload"""

_DEMO_HELP = """\
Serve the built-in streaming demo (a token streamer) and print how to call it, until Ctrl+C.

examples:
  litkit demo --port 0
  litkit demo --workers 2 --host 0.0.0.0 --api-key auto"""


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from . import __version__

    parser = argparse.ArgumentParser(prog="litkit", description="Serve a Python model over HTTP.")
    parser.add_argument("--version", action="version", version=f"litkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    serve_parser = commands.add_parser(
        "serve", help="serve a LitAPI class (or a dict of path: API) from a file or module", description=_SERVE_HELP, formatter_class=raw
    )
    serve_parser.add_argument("target", help="path/to/file.py:ClassName or package.module:ClassName")
    serve_parser.add_argument("--reload", action="store_true", help="serve again, on the same port, whenever the file changes")
    _add_serve_options(serve_parser)
    serve_parser.add_argument("--address", default=None, help="with --backend ray: the Ray cluster to join (default: start a local Ray)")
    serve_parser.add_argument("--replicas", type=int, default=None, help="with --backend ray: how many replicas (default: 1)")
    serve_parser.add_argument("--num-cpus", type=float, default=None, help="with --backend ray: CPUs per replica (default: Ray's, 1)")
    serve_parser.add_argument("--num-gpus", type=float, default=None, help="with --backend ray: GPUs per replica (default: none)")
    demo_parser = commands.add_parser("demo", help="serve the built-in streaming demo and show how to call it", description=_DEMO_HELP, formatter_class=raw)
    _add_serve_options(demo_parser, leave_out=("api_path", "stream", "spec"))
    return parser, {"serve": serve_parser, "demo": demo_parser}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a flag the subcommand does not know is reported with that subcommand's
    usage (and the flag it most resembles), not the top-level one."""
    parser, subcommands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = subcommands[args.command]
        known = [flag for action in sub._actions for flag in action.option_strings]
        hints = [f"{word} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(word.split("=")[0], known, n=1)) else word for word in unknown]
        sub.error("unrecognized arguments: " + " ".join(hints))
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)

    from .errors import LitkitError, PortInUseError
    from .server import serve
    from .server.terminal import block_until_interrupted, serve_for_a_terminal

    options = _serve_options(args)
    try:
        if args.command == "demo":
            from .demo import TokenStreamer

            api: Any = TokenStreamer()
            example: Any = TokenStreamer.request_example
            hint = ""
        else:
            api = load_api(args.target)
            example, hint = {"input": 1}, "   (send what your decode_request expects)"
        ray_options: dict[str, Any] = {name: getattr(args, name) for name in ("address", "replicas") if getattr(args, name, None) is not None}
        resources = {name: getattr(args, name) for name in ("num_cpus", "num_gpus") if getattr(args, name, None) is not None}
        if resources:
            ray_options["ray_actor_options"] = resources
        if options.get("backend") == "ray":
            if getattr(args, "reload", False):
                raise ValueError("--reload works with the local backend only; with --backend ray, deploy again after a change")
            ray_server = serve(api, **options, **ray_options)
        elif ray_options:
            flags = [name for name in ("address", "replicas", "num_cpus", "num_gpus") if getattr(args, name, None) is not None]
            raise ValueError(f"{', '.join('--' + name.replace('_', '-') for name in flags)}: options of --backend ray only")
        else:
            server = serve_for_a_terminal(api, **options)
            watch = _Reloader(args.target, options, lambda s: _how_to_call(s, example, hint)) if getattr(args, "reload", False) else None
    except PortInUseError as error:  # its message speaks to serve()'s caller: say it as a flag
        print(f"litkit: error: port {error.port} on {error.host} is already in use by another process; "
              "pass --port 0 to let the system pick a free port, or stop the program holding it", file=sys.stderr)
        return 1
    except (LitkitError, ImportError, ValueError, TypeError, OSError) as error:
        print(f"litkit: error: {error}", file=sys.stderr)
        return 1
    if options.get("backend") == "ray":
        return _serve_on_ray(ray_server, example, hint)
    announcement = _how_to_call(server, example, hint)
    if watch is not None:
        announcement += f"\nWatching {watch.path} for changes."
    block_until_interrupted(server, announcement + "\nPress Ctrl+C to stop.", watch)
    return 0


def _serve_on_ray(server: Any, example: Any, hint: str) -> int:
    """``litkit serve --backend ray``: show how to call the application, wait for Ctrl+C, delete it."""
    endpoint = server.url + server.api_path
    lines = [f"litkit: serving on Ray Serve at {endpoint} (application {server.name!r}, {'streaming' if server.stream_mode else 'JSON'})"]
    lines.append("  call it:  " + _curl(endpoint, example, server.stream_mode) + hint)
    lines.append(f"  health:   curl {server.url}/health")
    print("\n".join(lines) + "\nPress Ctrl+C to stop.", flush=True)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
        print("litkit: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
