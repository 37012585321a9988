"""``creator-monitor`` as a user gets it: the project built into a wheel and installed into a
fresh virtualenv, once per test session.

The CLI tests run this console script, so a module, template or migration left out of the wheel
(``[tool.setuptools]`` in ``pyproject.toml``) fails them, where the editable install of the
working tree would hide it. The wheel's dependencies are not downloaded again: the new
environment reads them from this interpreter's site-packages (a ``.pth`` line, which puts them
after the wheel's own files, so ``monitor`` is always the wheel's).

Under pytest-xdist the workers share one build: the first to need it builds it in the run's
shared folder (:func:`shared_folder`) under a file lock, the others wait for it and reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent.parent
#: the folder one test run's processes (the xdist workers) share; set by conftest.py
SHARED_ENV = "CREATOR_MONITOR_TEST_SHARED"

_SCRIPT: Path | None = None


def shared_folder() -> Path:
    """The folder shared by every worker of this test run (made by ``conftest.py`` before the
    workers start, removed after they end); a private one when run without conftest."""
    where = os.environ.get(SHARED_ENV)
    if where is None:
        where = tempfile.mkdtemp(prefix="creator-monitor-tests-")
        os.environ[SHARED_ENV] = where
    return Path(where)


def _run(*argv: str | Path, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{done.stdout}\n{done.stderr}")


def wheel_script() -> Path:
    """The ``creator-monitor`` script of a wheel install of this tree (built on first use)."""
    global _SCRIPT  # noqa: PLW0603 - one build per session, shared by every CLI test module
    if _SCRIPT is None:
        folder = shared_folder() / "wheel"
        with FileLock(shared_folder() / "wheel.lock", timeout=600):
            done = folder / "built"
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
                folder.mkdir()
                _build(folder)
                done.touch()
        _SCRIPT = folder / "env" / "bin" / "creator-monitor"
    return _SCRIPT


def _build(folder: Path) -> None:
    dist, build = folder / "dist", folder / "build"
    # a copy of the tree: building writes build/ and *.egg-info beside the sources
    shutil.copytree(
        ROOT,
        build,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".ci", "venv", "*.egg-info", "build", "dist", "__pycache__", "*.db*"
        ),
    )
    # no build isolation: setuptools and wheel are dev dependencies, so no download is needed
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", dist, build,
    )  # fmt: skip
    (wheel,) = dist.glob("creator_monitor-*.whl")
    env = folder / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    script = env / "bin" / "creator-monitor"
    where = subprocess.run(
        [python, "-c", "import monitor; print(monitor.__file__)"],
        cwd=folder,  # not the source tree, which ``-c`` would put first on the path
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(env):
        raise RuntimeError(f"the wheel install imports monitor from {where}, not from {env}")
    if not script.exists():
        raise RuntimeError(f"the wheel install has no {script}")
