"""`sia-monitor serve`: the OpenAI-compatible server (the app itself is `sia_monitor.serve`)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sia_monitor.cli.output import error_console
from sia_monitor.errors import SIAError
from sia_monitor.options import ModelOptions, add_calibrator_options, add_model_options, load_monitor

KEY_VARIABLE = "SIA_MONITOR_API_KEY"


def add_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="an OpenAI-compatible server whose replies carry the step entropy and P(correct)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the model over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) "
        "with the monitor on,\nand a chat page at /. Every streamed chunk that closes a reasoning step carries "
        "a top-level `sia` field\n(step, entropy_bits, top answers, p_correct, decision); the last chunk a "
        "summary. Monitor options go in\nthe request's `sia` object (answer space, step mode, guardrail "
        "policy). Any OpenAI client works:\n\n"
        "  sia-monitor serve\n"
        "  client = openai.OpenAI(base_url=\"http://127.0.0.1:8000/v1\", api_key=\"-\")\n"
        "  for chunk in client.chat.completions.create(model=\"qwen2.5-coder-0.5b-instruct\", stream=True,\n"
        "          messages=[{\"role\": \"user\", \"content\": \"2+3?\"}]):\n"
        "      print(sia_monitor.client.sia_of(chunk))    # a StepRecord, a Summary, or None\n\n"
        "Requests sent together are generated together (up to --max-concurrency); more wait in line (up to "
        "--max-queue),\nbeyond that a request is refused at once with 503 and Retry-After. A client that "
        "disconnects stops its\ngeneration within a token. Bound to 127.0.0.1 by default; to listen on other "
        "addresses, set an API key\n(--api-key-file, or the SIA_MONITOR_API_KEY variable), which every /v1 "
        "route then requires as a Bearer token.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                       "only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--api-key-file", type=Path, default=None, metavar="FILE",
                       help=f"require this key (the file's first line) as `Authorization: Bearer KEY`; or set "
                       f"{KEY_VARIABLE}. A key is never taken on the command line, where `ps` would show it")
    serve.add_argument("--max-concurrency", type=int, default=8, metavar="N",
                       help="requests generated together in one batch (default 8)")
    serve.add_argument("--max-queue", type=int, default=32, metavar="N",
                       help="requests waiting beyond those; more are refused with 503 (default 32)")
    add_calibrator_options(serve)
    add_model_options(serve)
    serve.set_defaults(handler=command)


def read_api_key(path: Path | None) -> str | None:
    """The key from --api-key-file (its first line) or the environment; None when neither is set."""
    if path is None:
        return os.environ.get(KEY_VARIABLE) or None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SIAError(f"Cannot read --api-key-file {path}: {exc.strerror or exc}.") from exc
    key = lines[0].strip() if lines else ""
    if not key:
        raise SIAError(f"--api-key-file {path} is empty: write the key on its first line.")
    return key


def check_address(host: str, port: int) -> None:
    """Refuse a port out of range or an address this machine cannot listen on, before the model loads."""
    if not 0 < port < 65536:
        raise SIAError(f"--port must be between 1 and 65535, not {port}.")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        in_use = exc.errno == errno.EADDRINUSE
        raise SIAError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                       "Another server is there: pick another --port." if in_use else
                       "Use an address of this machine (127.0.0.1, 0.0.0.0 for all).") from exc


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def command(args: argparse.Namespace) -> int:
    err = error_console()
    if args.max_concurrency < 1 or args.max_queue < 0:
        raise SIAError("--max-concurrency must be at least 1 and --max-queue at least 0.")
    api_key = read_api_key(args.api_key_file)
    check_address(args.host, args.port)
    if api_key is None and not is_loopback(args.host):
        err.print(f"[bold yellow]warning:[/] listening on {escape(args.host)} without an API key: anyone who can "
                  f"reach this address can use the model. Set one with --api-key-file or {KEY_VARIABLE}.")
    model = ModelOptions.from_args(args)
    model_id = model.check()
    hidden = None  # the hidden states to record: those the calibrator (chosen, or shipped) reads, in process
    if args.calibrator not in ("auto", "none"):
        from calibrators import load_calibrator

        chosen = load_calibrator(Path(args.calibrator))  # a damaged or untrusted file is refused now, not per request
        hidden = chosen.hidden_state_spec
    elif args.calibrator == "auto":
        from calibrators.artifact import shipped_hidden_state_spec

        hidden = shipped_hidden_state_spec(model_id)
    if model.engine is not None:
        hidden = None  # an engine gives none: the entropy-only calibrators score its steps
    from sia_monitor.backends.base import GenerationSettings
    from sia_monitor.serve.app import Limits, create_app

    GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)  # refuse bad defaults
    monitor = load_monitor(model, err, hidden_states=hidden)
    limits = Limits(default_max_tokens=args.max_new_tokens, max_tokens=max(args.max_new_tokens, Limits.max_tokens))
    app = create_app(monitor, api_key=api_key, limits=limits, max_batch=args.max_concurrency,
                     max_waiting=args.max_queue, calibrator=args.calibrator, force=args.force,
                     default_temperature=args.temperature)
    import uvicorn

    shown = f"[{args.host}]" if ":" in args.host else args.host
    Console(stderr=True, highlight=False).print(
        f"Serving {escape(model_id)} at http://{escape(shown)}:{args.port} · chat page: / · OpenAI API: /v1"
        + (" · API key required" if api_key else "") + " · Ctrl-C stops")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
