"""Write docs/tui.svg: the TUI replaying a saved SVAMP trace with the shipped calibrator and the guardrail on.

    .venv/bin/python docs/tui_screenshot.py [--item 30] [--size 120x36] [--out docs/tui.svg]

Deterministic: the replay plays with no waiting and the picture is taken once it has finished (a replay's
status shows its recorded times, not the clock).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from calibrators import calibrator_for
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.replay import load_replay
from tui.app import create_app
from tui.sources import ReplaySource

DATA = Path(__file__).resolve().parents[1] / "calibrators" / "data" / "qwen2.5-coder-0.5b-instruct" / "svamp.jsonl.gz"


async def shoot(item: int, size: tuple[int, int], out: Path, accept_above: float | None) -> None:
    trajectories = load_replay(DATA, item)
    first = trajectories[0]
    source = ReplaySource(trajectories, speed=0, scorer=calibrator_for(first.model_id, first.answer_space),
                          policy=GuardrailPolicy(accept_above=accept_above), auto=True)
    app = create_app(source, clock=lambda: 0.0)
    async with app.run_test(size=size) as pilot:
        while not app.finished:
            await pilot.pause(0.02)
        await pilot.pause(0.3)
        out.write_text(app.export_screenshot(title="sia-monitor tui"), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--item", type=int, default=30, help="record of the SVAMP trajectories (default 30)")
    parser.add_argument("--size", default="120x36", help="terminal WIDTHxHEIGHT (default 120x36)")
    parser.add_argument("--accept-above", type=float, default=0.5, help="the guardrail's accept threshold")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("tui.svg"))
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    asyncio.run(shoot(args.item, (width, height), args.out, args.accept_above))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
