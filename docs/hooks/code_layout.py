"""The code layout page, generated at every docs build (an mkdocs hook): every module of the
package and of benchmarks/, with the first sentence of its docstring. Nothing to keep in step by hand.

    python docs/hooks/code_layout.py     # print the generated Markdown
"""

from __future__ import annotations

import ast
from pathlib import Path

MARKER = "<!-- code-layout -->"
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pixel_lightning", "benchmarks")
ENTRY_POINTS = ("train.py", "sample.py", "eval.py")


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    return markdown.replace(MARKER, render(ROOT)) if MARKER in markdown else markdown


def summary(path: Path) -> str:
    """The first sentence (or first line) of a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = doc.split("\n\n")[0].replace("\n", " ").strip()
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def modules(root: Path) -> list[Path]:
    found = [root / name for name in ENTRY_POINTS if (root / name).is_file()]
    for package in PACKAGES:
        found += sorted((root / package).rglob("*.py"))
    return [path for path in found if "__pycache__" not in path.parts]


def escape(text: str) -> str:
    """`<` and `>` as entities outside `code spans` (inside them Markdown shows them as they are)."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for i, part in enumerate(parts))


def render(root: Path = ROOT) -> str:
    rows = ["| file | what it is |", "|---|---|"]
    for path in modules(root):
        text = escape(summary(path)).replace("|", "\\|")
        rows.append(f"| `{path.relative_to(root).as_posix()}` | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(render())
