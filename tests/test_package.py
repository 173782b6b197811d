"""A real package: the wheel carries the pretrained networks, their cards and ``py.typed``, and
installed into a fresh virtual environment it runs ``l2o list`` and the README's drop-in example.

Offline: the wheel is built without build isolation, installed with ``--no-index --no-deps``,
and the fresh environment borrows this environment's dependencies (torch, numpy, ...) through a
``.pth`` line instead of downloading them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_drop_in() -> str:
    """The README's drop-in example, with a tiny loader of random digits-shaped batches."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use a learned optimizer in your training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    loader = "loader = [(torch.randn(16, 64), torch.randint(0, 10, (16,))) for _ in range(3)]\n"
    return code.replace("for x, y in loader:", loader + "for x, y in loader:", 1)


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_environment(tmp_path):
    source = tmp_path / "source"  # build from a copy: the working tree stays clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    (wheel,) = dist.glob("l2o-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "l2o/py.typed" in names
    for name in ("quadratic", "digits-mlp"):
        assert f"l2o/pretrained/{name}.safetensors" in names
        assert f"l2o/pretrained/{name}.card.json" in names

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*pip, str(wheel)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from this environment, after the fresh one's own site-packages (so the
    # wheel's l2o, not this checkout's editable one, is what gets imported).
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = subprocess.run(
        [str(python), "-c", "import l2o; print(l2o.__file__, l2o.__version__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv)) and where.split()[1] == "0.1.0", where
    listing = subprocess.run(
        [str(venv / "bin" / "l2o"), "list"], check=True, capture_output=True, text=True
    ).stdout
    assert "digits-mlp" in listing and "quadratic" in listing
    example = tmp_path / "drop_in.py"
    example.write_text(readme_drop_in() + "print('ran', len(opt.state))\n")
    ran = subprocess.run(
        [str(python), str(example)], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert ran.stdout.strip() == "ran 4", ran.stdout


def test_the_readme_drop_in_example_runs_here():
    """The same snippet, in this environment (fast)."""
    namespace: dict = {}
    exec(compile(readme_drop_in(), "README.md", "exec"), namespace)
    assert len(namespace["opt"].state) == 4
