"""Repository hygiene: the README's commands are what CI runs, and the code is lint-clean."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support import ROOT


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```sh")
    end = lines.index("```", start)
    return [line for line in lines[start + 1:end] if line and not line.startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    run, test = _readme_commands()
    assert run.endswith("centric serve")
    assert test.endswith("python -m pytest")
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format",
                             "concise", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _imported(modules: str, banned: set[str]) -> list[str]:
    """The banned top-level packages that importing `modules` pulls in, in a fresh process."""
    code = (f"import sys, {modules}; "
            f"print(sorted({banned!r} & {{m.split('.')[0] for m in sys.modules}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    return list(ast.literal_eval(out))


def test_pure_packages_import_neither_flask_nor_redis():
    assert _imported("bandits, experiments.assignment, experiments.codec, experiments.rules",
                     {"flask", "redis", "server"}) == []
    # The bandit code, offline evaluation included, does not depend on experiments either.
    assert _imported("bandits, bandits.offline",
                     {"flask", "redis", "server", "experiments"}) == []


def test_mypy_is_clean():
    result = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# Directories that tools write while the suite runs (caches, crash databases, local data).
TOOL_DIRS = (".schemathesis", ".hypothesis", ".pytest_cache", ".ruff_cache", ".mypy_cache",
             "__pycache__", "var")


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)


def test_tool_caches_are_neither_tracked_nor_unignored():
    # The suite runs in a git checkout (CI clones main): a failure here is a real failure.
    tracked = _git("ls-files", "-z")
    assert tracked.returncode == 0, tracked.stderr
    # A tracked file under a cache is rewritten by running the tests: the tree gets dirty.
    inside = [path for path in tracked.stdout.split("\0")
              if set(path.split("/")[:-1]) & set(TOOL_DIRS)]
    assert inside == [], inside
    for name in TOOL_DIRS:
        assert _git("check-ignore", "-q", f"{name}/probe").returncode == 0, (
            f"{name}/ is not in .gitignore")
