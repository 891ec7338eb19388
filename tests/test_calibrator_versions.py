"""A calibrator loaded under other scikit-learn / skops versions than its card records says so, once.

Real shipped artifacts, copied to tmp_path with an edited card (the card holds the sha256 of the .skops file,
not of itself, so editing it leaves the file loadable).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from calibrators.artifact import (
    SHIPPED_DIR,
    CalibratorVersionWarning,
    card_path,
    installed_versions,
    load_calibrator,
    release_series,
    save_calibrator,
)

SHIPPED = sorted(SHIPPED_DIR.glob("*/*.skops"))
NUMERIC = SHIPPED_DIR / "qwen2.5-coder-0.5b-instruct" / "numeric.skops"


def copy_with_card(tmp_path: Path, edit: dict[str, str | None]) -> Path:
    """A copy of the shipped numeric calibrator whose card's `fitted_with` has `edit` applied (None: delete)."""
    path = Path(shutil.copy(NUMERIC, tmp_path / NUMERIC.name))
    card = json.loads(card_path(NUMERIC).read_text(encoding="utf-8"))
    for package, version in edit.items():
        if version is None:
            card["fitted_with"].pop(package, None)
        else:
            card["fitted_with"][package] = version
    card_path(path).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def bumped(version: str, index: int) -> str:
    parts = [int(p) for p in version.split("+")[0].split(".")[:3]]
    parts[index] += 1
    return ".".join(str(p) for p in parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_calibrators_record_versions_and_load_without_warning(path: Path) -> None:
    card = json.loads(card_path(path).read_text(encoding="utf-8"))
    assert set(card["fitted_with"]) == {"scikit-learn", "skops"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning at all (ours, or scikit-learn's own) fails the test
        load_calibrator(path)


def test_other_scikit_learn_minor_warns_once(tmp_path: Path) -> None:
    installed = installed_versions()["scikit-learn"]
    recorded = bumped(installed, 1)
    path = copy_with_card(tmp_path, {"scikit-learn": recorded})
    with pytest.warns(CalibratorVersionWarning) as record:
        calibrator = load_calibrator(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"scikit-learn {recorded} (installed: {installed})" in message
    assert "`sia-monitor fit`" in message and str(path) in message and "\n" not in message
    assert calibrator.info.model_id == "qwen2.5-coder-0.5b-instruct"  # a warning, not a refusal


def test_other_skops_series_warns(tmp_path: Path) -> None:
    installed = installed_versions()["skops"]
    recorded = bumped(installed, 0 if not installed.startswith("0.") else 1)
    path = copy_with_card(tmp_path, {"skops": recorded})
    with pytest.warns(CalibratorVersionWarning, match=rf"skops {recorded} \(installed: {installed}\)"):
        load_calibrator(path)


def test_patch_releases_and_old_cards_load_quietly(tmp_path: Path) -> None:
    versions = installed_versions()
    for edit in ({"scikit-learn": bumped(versions["scikit-learn"], 2), "skops": bumped(versions["skops"], 2)},
                 {"scikit-learn": None, "skops": None}):  # a card written before versions were recorded
        path = copy_with_card(tmp_path, edit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_calibrator(path)


def test_save_records_the_installed_versions(tmp_path: Path) -> None:
    path = save_calibrator(load_calibrator(NUMERIC), tmp_path / "refit" / "numeric.skops")
    card = json.loads(card_path(path).read_text(encoding="utf-8"))
    assert card["fitted_with"] == installed_versions()


@pytest.mark.parametrize(("package", "a", "b", "same"), [
    ("scikit-learn", "1.9.1", "1.9.2", True),
    ("scikit-learn", "1.9.1", "1.10.0", False),
    ("scikit-learn", "1.9.1", "2.9.1", False),
    ("skops", "0.16.0", "0.16.3", True),
    ("skops", "0.16.0", "0.17.0", False),  # 0.x: a minor release may break
    ("skops", "1.2.0", "1.5.1", True),
    ("skops", "1.2.0", "2.0.0", False),
])
def test_release_series(package: str, a: str, b: str, same: bool) -> None:
    assert (release_series(package, a) == release_series(package, b)) is same
