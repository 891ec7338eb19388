"""No write path can lose a trajectory: atomic repair, saves that fail keep their records, rows saved as they end."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.collect import CollectPlan, collect, load_existing, run_collection
from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import NUMERIC
from sia_monitor.tasks.benchmarks import Item
from sia_monitor.trajectory import (
    read_trajectories,
    read_trajectory_file,
    save_trajectories,
    write_trajectories,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = "qwen2.5-coder-0.5b-instruct"
SVAMP = REPO / "calibrators" / "data" / MODEL / "svamp.jsonl.gz"  # 1000 real trajectories


def _with_cut_tail(tmp_path: Path) -> tuple[Path, int]:
    """A copy of the SVAMP file with a cut-off gzip member appended: what a kill in mid-append leaves."""
    path = tmp_path / "svamp.jsonl.gz"
    shutil.copyfile(SVAMP, path)
    record = next(iter(read_trajectories(SVAMP)))
    member = gzip.compress((json.dumps(record.to_json()) + "\n").encode())
    with path.open("ab") as out:
        out.write(member[: len(member) // 2])
    return path, sum(1 for _ in read_trajectories(SVAMP))


def _staging_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".partial-" in p.name]


REPAIR = ("import sys; from pathlib import Path; from sia_monitor.collect import load_existing; "
          f"load_existing(Path(sys.argv[1]), {MODEL!r})")


def test_a_kill_during_repair_loses_no_trajectory(tmp_path: Path) -> None:
    """SIGKILL the repair while it rewrites (the staging file exists), and at other moments: every complete
    trajectory is still there each time, and a repair that runs to the end leaves a whole file."""
    path, expected = _with_cut_tail(tmp_path)
    killed_mid_write = 0
    for delay in (None, 0.3, 1.5):
        process = subprocess.Popen([sys.executable, "-c", REPAIR, str(path)], cwd=REPO)
        deadline = time.time() + 120
        if delay is None:  # wait until the new file is being written, then kill at once
            while process.poll() is None and not _staging_files(tmp_path) and time.time() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(delay)
        if process.poll() is None:
            killed_mid_write += bool(_staging_files(tmp_path))
            process.send_signal(signal.SIGKILL)
        process.wait()
        assert len(read_trajectory_file(path).records) == expected  # an unfinished copy may lie beside it
    assert killed_mid_write >= 1, "no kill landed while the new file was being written"
    subprocess.run([sys.executable, "-c", REPAIR, str(path)], cwd=REPO, check=True, timeout=300)
    whole = read_trajectory_file(path)
    assert whole.truncated is None and len(whole.records) == expected
    assert not _staging_files(tmp_path), "the copies the killed repairs left were not cleaned up"


def test_a_file_of_another_model_is_refused_before_any_repair(tmp_path: Path) -> None:
    path, _ = _with_cut_tail(tmp_path)
    before = path.read_bytes()
    with pytest.raises(SIAError, match="another model"):
        load_existing(path, "some-other-model")
    assert path.read_bytes() == before


def test_a_failed_save_keeps_the_trajectory_in_a_rescue_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    record = next(iter(read_trajectories(SVAMP)))
    (tmp_path / "a-file").write_text("x")
    for destination in ("/sys/t.jsonl", str(tmp_path / "a-file" / "t.jsonl")):
        with pytest.raises(SIAError, match="kept in") as caught:
            save_trajectories(destination, [record])
        rescued = Path(str(caught.value).split("kept in ", 1)[1].removesuffix(" instead."))
        assert [r.final_text for r in read_trajectories(rescued)] == [record.final_text]
        assert rescued.parent == Path("sia-monitor-runs")
        rescued.unlink()


def test_rows_are_saved_as_they_end_not_when_the_batch_does(smol: Monitor, tmp_path: Path) -> None:
    """A batch where one row ends long before the other: its record is in the file while the other still
    generates, and progress moves within the batch (tokens, then rows)."""
    out = tmp_path / "rows.jsonl"
    # Measured at batch 2 on AMD EPYC, default kernels and forced AVX2 alike: the short row ends (eos) after 67
    # tokens, the long one after 121; 200 leaves room for other CPUs' traces.
    short = Item("svamp", "short", "Tom has 12 apples and gives away 5, then buys 7 more. How many apples does he "
                 "have now?", NUMERIC, "14")
    long = Item("svamp", "long", "List the numbers from 1 to 200, one per line, then add them up.", NUMERIC, "20100")
    plan = CollectPlan(benchmark="svamp", out=out, todo=[(short, 0), (long, 0)], done=0)
    seen: list[tuple[int, int, int]] = []

    def progress(done: int, total: int, tokens: int) -> None:
        in_file = len(list(read_trajectories(out))) if out.exists() else 0
        assert in_file == done, "progress counted a row that is not in the file yet"
        seen.append((done, total, tokens))

    run_collection(smol, plan, batch_size=2, settings=GenerationSettings(max_new_tokens=200), progress=progress)
    assert seen[0] == (0, 2, 0) and seen[-1][0] == 2 and all(total == 2 for _, total, _ in seen)
    first_row_done = next(i for i, (done, _, _) in enumerate(seen) if done == 1)
    assert seen[-1][2] > seen[first_row_done][2], "the first row was saved only when the whole batch ended"
    assert sorted(r.item_id for r in read_trajectories(out)) == ["long", "short"]


def test_a_resumed_collection_counts_the_whole_job(smol: Monitor, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "svamp.jsonl"
    settings = GenerationSettings(max_new_tokens=8)
    collect(smol, "svamp", out, str(data_dir), limit=2, batch_size=2, settings=settings)
    calls: list[tuple[int, int]] = []
    collect(smol, "svamp", out, str(data_dir), limit=3, batch_size=2, settings=settings,
            progress=lambda done, total, tokens: calls.append((done, total)))
    assert calls[0] == (2, 3) and calls[-1] == (3, 3)


def test_the_tui_keeps_a_session_it_cannot_save_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`q` with a --save that fails at quit time: the attempts go to a rescue file, the app exits 1 with the
    error (not Textual's crash screen and exit 0)."""
    import asyncio

    from sia_monitor.guardrail.replay import load_replay
    from tui.app import create_app
    from tui.sources import ReplaySource

    monkeypatch.chdir(tmp_path)
    source = ReplaySource(load_replay(SVAMP, 0), speed=0, scorer=None, policy=None)
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    app = create_app(source, save_path=blocked / "session.jsonl")

    async def drive() -> None:
        async with app.run_test() as pilot:
            for _ in range(200):
                if app.finished:
                    break
                await pilot.pause(0.05)
            await pilot.press("q")

    asyncio.run(drive())
    assert app.return_code == 1 and app.saved_path is None  # `sia-monitor tui` then exits 1 too
    assert app.error is not None and "kept in" in app.error
    rescued = Path(app.error.split("kept in ", 1)[1].removesuffix(" instead."))
    assert len(list(read_trajectories(rescued))) >= 1


def test_write_replaces_atomically_and_appends_durably(tmp_path: Path) -> None:
    records = list(read_trajectories(SVAMP))[:3]
    path = tmp_path / "t.jsonl.gz"
    write_trajectories(path, records[:1])
    write_trajectories(path, records[1:])  # a second gzip member
    assert [r.item_id for r in read_trajectories(path)] == [r.item_id for r in records]
    write_trajectories(path, records[:2], append=False)
    assert [r.item_id for r in read_trajectories(path)] == [r.item_id for r in records[:2]]
    assert os.listdir(tmp_path) == ["t.jsonl.gz"]  # no staging file left behind

