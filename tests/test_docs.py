"""Docs that tests keep true: the generated CLI reference, README's set-up commands, CI's command."""

from __future__ import annotations

import re
from pathlib import Path

from labvault.cli.reference import iter_commands, render_reference

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    current = (ROOT / "docs" / "cli-reference.md").read_text(encoding="utf-8")
    assert current == render_reference(), "regenerate: python -m labvault.cli.reference > docs/cli-reference.md"


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, cmd in iter_commands():
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "help", None):
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, f"commands or options without help: {missing}"


def test_readme_setup_commands_exist_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Set up.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README must have a Set up section with a bash block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/demo", "scripts/check"]
    for command in commands:
        script = ROOT / command
        assert script.is_file(), f"{command} is missing"
        assert script.stat().st_mode & 0o111, f"{command} must be executable"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec scripts/check\s*$", ci, re.M), ".ci/run must call README's test command"


def test_docs_links_resolve() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).is_file(), f"{doc.name} links to missing {target}"
