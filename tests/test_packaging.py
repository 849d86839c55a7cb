"""A plain (not editable) install carries the shipped configs: the wheel holds every YAML
under tadistill/configs/, so `tadistill quickstart` and `tadistill distill configs/...` find
them through importlib.resources after `pip install .`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_shipped_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("tadistill-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".yaml")}
    source = ROOT / "src" / "tadistill" / "configs"
    shipped = {f"tadistill/configs/{p.relative_to(source)}" for p in source.rglob("*.yaml")}
    assert shipped and packaged == shipped
    assert "tadistill/configs/quickstart.yaml" in packaged
