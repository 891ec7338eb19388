"""`sia-monitor models`: the named models, whether they are installed and converted, and their calibrators."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from sia_monitor.errors import SIAError
from sia_monitor.models import DEFAULT_MODEL, REGISTRY, cache_root, locate_parts


def add_parser(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser(
        "models", help="list the named models, whether they are installed, and their calibrators",
        description="List the models `--model` accepts by name: what each is, whether its pinned PyPI packages "
        "are installed (and the pip command if not), whether it has been converted to the local cache "
        "($SIA_MONITOR_CACHE or ~/.cache/sia-monitor), its license, and the calibrators shipped for it. "
        "Any local model directory, .gguf file or (online) hub id works too.",
    )
    models.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    for spec in REGISTRY.values():
        try:
            locate_parts(spec)
            state = "installed"
        except SIAError:
            state = "not installed: pip install " + " ".join(spec.requirements)
        converted = (cache_root() / "models" / spec.name).is_dir()
        default = " (default)" if spec.name == DEFAULT_MODEL else ""
        console.print(f"[bold]{spec.name}[/]{default}: {spec.description}; {state}"
                      f"{'; converted' if converted else ''}; license {spec.license}")
        from calibrators.artifact import SHIPPED_DIR

        for path in sorted((SHIPPED_DIR / spec.name).glob("*.skops")):
            console.print(f"    calibrator {path.stem}: {escape(str(path))}")
    return 0
