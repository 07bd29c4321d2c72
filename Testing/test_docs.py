"""The documentation's commands, run as written: every ```bash block of README.md and docs/*.md.

A block runs in a temporary folder per document (the blocks of one document run in order in
the same folder, as a reader would type them), with the ``ctv`` of this environment first on
PATH, under ``bash -euo pipefail``. A block that cannot run here is marked in the document by
``<!-- doc-test skip: REASON -->`` on the line before its fence; it is reported as a skip with
that reason. An unmarked block that fails, or a marker without a reason, fails the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

#: One worker runs them all, in order (``--dist loadgroup``): a document's blocks build on each other.
pytestmark = pytest.mark.xdist_group("docs")

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*doc-test skip:(.*?)-->")


@dataclass(frozen=True)
class Block:
    """One ```bash block: its document, its first line (1-based), its text, and the skip reason (None: run)."""

    document: Path
    line: int
    text: str
    skip: str | None


def bash_blocks(document: Path) -> list[Block]:
    """The ```bash blocks of a Markdown file, each with the skip reason of the marker before it."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks, n = [], 0
    while n < len(lines):
        if lines[n].strip() == "```bash":
            start = n
            end = next(k for k in range(n + 1, len(lines)) if lines[k].strip() == "```")
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            match = SKIP.search(before)
            reason = match.group(1).strip() if match else None
            if match and not reason:
                pytest.fail(f"{document.name}:{start + 1}: a doc-test skip marker without a reason")
            blocks.append(Block(document, start + 1, "\n".join(lines[start + 1:end]) + "\n", reason))
            n = end
        n += 1
    return blocks


def _id(block: Block) -> str:
    return f"{block.document.relative_to(REPO)}:{block.line}"


ALL_BLOCKS = [block for document in DOCUMENTS for block in bash_blocks(document)]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> dict[Path, Path]:
    """One working folder per document, shared by its blocks in order."""
    return {document: tmp_path_factory.mktemp(document.stem) for document in DOCUMENTS}


def test_every_document_has_bash_blocks_found():
    assert any(b.document.name == "training.md" and b.skip is None for b in ALL_BLOCKS)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=_id)
def test_documented_command_runs_as_written(block: Block, workdirs):
    if block.skip is not None:
        pytest.skip(block.skip)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=workdirs[block.document], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (f"{_id(block)} failed (exit {result.returncode}):\n{block.text}\n"
                                    f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
