"""The documentation says what the code does: every flag of every command and every result column
of every family is in its page (docs/), every documented flag exists, the README's examples parse,
and every repository path the pages, the README and the engine's messages cite exists.

`mkdocs build --strict` (CI, `.ci/run`) checks the links between pages; this checks the pages
against the code.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from motionfleet import cli
from motionfleet.core import registry
from motionfleet.core.io.rejections import rejected_schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# command -> the page holding its flag table (a family command's page is docs/<command>.md).
PAGES = {**{command: f"{command}.md" for command in registry.commands()},
         "export": "export.md", "evaluate": "evaluate.md", "leaderboard": "evaluate.md", "verify": "jobs.md",
         "bench": "benchmarks.md", "render": "render.md", "report": "render.md", "convert": "convert.md"}
TABLE_FLAG = re.compile(r"^\| `(?:-\w, )?(--[a-z0-9-]+)", re.M)  # the first cell of a flag table's row
TABLE_COLUMN = re.compile(r"^\| `([a-z0-9_]+)` \|", re.M)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start:], re.M)
    return text[start:start + following.start()] if following else text[start:]


def flag_table(command: str) -> str:
    text = (DOCS / PAGES[command]).read_text()
    for heading in (f"## Flags of {command}", f"### Flags of {command}", "## Flags"):
        if f"\n{heading}\n" in text:
            return section(text, heading)
    raise AssertionError(f"docs/{PAGES[command]} has no flag table for {command}")


def test_every_command_has_a_page():
    assert set(subcommands()) == set(PAGES), "a new command needs its page in PAGES and a flag table there"


@pytest.mark.parametrize("command", sorted(PAGES))
def test_every_flag_is_documented_and_every_documented_flag_exists(command):
    documented = TABLE_FLAG.findall(flag_table(command))
    flags = parser_flags(subcommands()[command])
    assert not flags - set(documented), f"undocumented in docs/{PAGES[command]}: {sorted(flags - set(documented))}"
    assert not set(documented) - flags, f"documented in docs/{PAGES[command]} but not a flag: {sorted(set(documented) - flags)}"
    assert len(documented) == len(set(documented)), f"a flag documented twice in docs/{PAGES[command]}"


@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_every_result_column_is_documented(name):
    command = registry.FAMILIES[name][0]
    schema = importlib.import_module(f"motionfleet.{name}.runner").RESULTS_SCHEMA
    documented = TABLE_COLUMN.findall(section((DOCS / f"{command}.md").read_text(), "## Result columns"))
    assert documented == schema.names, f"docs/{command}.md's result columns differ from {name}'s RESULTS_SCHEMA"


def test_the_rejected_table_is_documented():
    text = (DOCS / "jobs.md").read_text()
    names = [n for n in rejected_schema("sample_id").names if n != "sample_id"]
    assert all(f"`{n}`" in text for n in names) and "`video_id`" in text


def test_the_readme_has_one_example_per_command_and_each_parses():
    examples = [shlex.split(line, comments=True) for line in fenced(README.read_text(), "bash")
                if line.startswith("motionfleet ")]
    parser = cli.build_parser()
    for argv in examples:
        parser.parse_args(argv[1:])  # a UsageError names the line's mistake
    assert {argv[1] for argv in examples} == set(subcommands())


def test_the_set_up_commands_are_the_same_in_the_readme_and_the_install_page():
    readme, install = fenced(README.read_text(), "bash"), fenced((DOCS / "install.md").read_text(), "bash")
    set_up = [line for line in readme if "pip install" in line or "pytest" in line]
    assert len(set_up) == 2 and all(line in install for line in set_up)


def test_every_link_from_the_readme_resolves():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert links and all((ROOT / link).is_file() for link in links if "://" not in link), links


# Repository paths written as `engine/...` etc. in the docs, the README and the engine's own
# messages: a moved or renamed file must take its mentions along.
REPO_PATH = re.compile(r"(?<![\w/.])((?:engine|kernels|export|benchmarks|tests|cluster|docs)/[\w./-]*\w)")


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md")), *sorted((ROOT / "engine").rglob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_cited_exists(path):
    cited = {m for m in REPO_PATH.findall(path.read_text()) if "<" not in m and "*" not in m}
    missing = sorted(m for m in cited if not (ROOT / m).exists())
    assert not missing, f"{path.relative_to(ROOT)} cites paths that do not exist: {missing}"


def fenced(text: str, language: str) -> list[str]:
    """The lines of the text's fenced code blocks in ``language``, continuation lines joined."""
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]
