"""The configuration reference, generated from conf/ at every docs build (an mkdocs hook).

docs/reference/config.md holds the marker below; `on_page_markdown` replaces it with every config
group, each of its options, and each option's keys with their defaults and the comments beside
them in the YAML. So the reference cannot drift from conf/: it is conf/.

    python docs/hooks/config_reference.py     # print the generated Markdown
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import yaml

MARKER = "<!-- config-reference -->"
CONF = Path(__file__).resolve().parents[2] / "conf"
ENTRY_CONFIGS = ("train", "sample", "eval")
_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.\-]*)\s*:(?P<rest>.*)$")


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    return markdown.replace(MARKER, render(CONF)) if MARKER in markdown else markdown


def groups(conf: Path) -> dict[str, list[str]]:
    """Every config group (a folder of conf/, nested ones as `model/output`) -> its options, sorted."""
    found: dict[str, list[str]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        if path.parent != conf:
            found.setdefault(path.parent.relative_to(conf).as_posix(), []).append(path.stem)
    return found


def comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment on its line (`key: value  # comment`), from the YAML's text."""
    found, stack = {}, []  # stack: (indent, key) of the enclosing mappings
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        comment = _comment(match["rest"])
        if comment:
            found[".".join(key for _, key in stack)] = comment
    return found


def _comment(rest: str) -> str:
    """The `# ...` part of a line's remainder, outside quotes."""
    quote = None
    for i, char in enumerate(rest):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1 :].strip()
    return ""


def header(text: str) -> list[str]:
    """The comment block at the top of a YAML file as Markdown: prose as a paragraph, indented
    lines (example commands) as a code block; without the `@package` line."""
    blocks: list[tuple[bool, list[str]]] = []  # (is code, lines)
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if "@package" in line:
            continue
        body = line[1:]
        code = body.startswith("   ")
        body = body[3:] if code else body.strip()
        if not body:
            continue
        if blocks and blocks[-1][0] == code:
            blocks[-1][1].append(body)
        else:
            blocks.append((code, [body]))
    out = []
    for code, lines in blocks:
        out += (["```text", *lines, "```"] if code else [escape(" ".join(lines))]) + [""]
    return out


def escape(text: str) -> str:
    """`<` and `>` as entities outside `code spans` (inside them Markdown shows them as they are)."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for i, part in enumerate(parts))


def flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def show(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list)):
        return f"`{yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()}`"
    return f"`{value}`" if str(value) != "" else '`""`'


def cell(text: str) -> str:
    return escape(text).replace("|", "\\|").replace("\n", " ")


def table(text: str, package: str) -> list[str]:
    """One row per key of a YAML file: its full name (under `package`), default and comment."""
    data = yaml.safe_load(text) or {}
    notes = comments(text)
    defaults = data.pop("defaults", None) if isinstance(data, dict) else None
    rows = ["| key | default | note |", "|---|---|---|"]
    if defaults:
        rows.append(f"| (defaults list) | {cell(show(defaults))} | the configs this one is composed from |")
    for key, value in flatten(data, ""):
        name = f"{package}.{key}" if package else key
        rows.append(f"| `{cell(name)}` | {cell(show(value))} | {cell(notes.get(key, ''))} |")
    return rows if len(rows) > 2 else ["(no keys: it only selects other configs)"]


def package_of(group: str, text: str) -> str:
    """Where a group option's keys land in the composed config (Hydra's `@package`)."""
    match = re.search(r"^#\s*@package\s+(\S+)", text, re.M)
    if match:
        return "" if match[1] == "_global_" else match[1]
    return group.replace("/", ".")


def default_choices(conf: Path) -> dict[str, str]:
    """Group -> the option train.yaml picks when none is given (`null`: none)."""
    choices = {}
    for entry in yaml.safe_load((conf / "train.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for group, option in entry.items():
                choices[group] = "null" if option is None else str(option)
    return choices


def render(conf: Path = CONF) -> str:
    out = []
    chosen = default_choices(conf)
    out += ["## Entry configs", ""]
    for name in ENTRY_CONFIGS:
        text = (conf / f"{name}.yaml").read_text()
        out += [f"### `conf/{name}.yaml`", ""] + header(text) + table(text, "") + [""]
    out += ["## Config groups", "", "Pick an option with `group=option` on the command line, e.g. `model=row_lstm`."]
    out += [""]
    for group, options in groups(conf).items():
        default = chosen.get(group)
        out += [f"### `{group}`", ""]
        out += [
            f"Options: {', '.join(f'`{o}`' for o in options)}."
            + (f" Default in `train.py`: `{default}`." if default is not None else "")
        ]
        out += [""]
        for option in options:
            text = (conf / group / f"{option}.yaml").read_text()
            package = package_of(group, text)
            out += [f"#### `{group}={option}`", ""]
            out += header(text)
            if not package:
                out += ["Sets keys anywhere in the config (`@package _global_`).", ""]
            out += table(text, package) + [""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
