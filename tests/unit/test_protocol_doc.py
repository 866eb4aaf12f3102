"""docs/PROTOCOL.md is the contract: its command table, the README's summary table and the
handler module's ``COMMANDS`` must name the same commands, and the README's links to files
in the repository must resolve."""

import re
from pathlib import Path

import erqpy.server.handlers

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
README = ROOT / "README.md"


def section(text: str, heading: str) -> str:
    """The body of the markdown section ``heading`` (up to the next heading of any level)."""
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert match is not None, f"no section {heading!r}"
    return match.group(1)


def table_commands(body: str) -> set:
    """The command words of a markdown table's first column: the first word of each
    code span (``get <key>``, ``gets ...`` give get and gets); rows without one (the
    header, "anything else") give none."""
    commands = set()
    rows = [line for line in body.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "no table in the section"
    for row in rows[2:]:  # after the header and the |---| line
        first_cell = re.split(r"(?<!\\)\|", row)[1]
        commands.update(span.split()[0] for span in re.findall(r"`([^`]+)`", first_cell))
    return commands


def handler_commands() -> set:
    return set(erqpy.server.handlers.COMMANDS)


def test_protocol_document_is_in_the_repository():
    assert PROTOCOL.is_file()
    assert PROTOCOL.read_text().startswith("# The erqpy wire protocol")


def test_protocol_command_table_matches_the_handlers():
    """A handler without a row, or a row without a handler, fails here."""
    documented = table_commands(section(PROTOCOL.read_text(), "## Commands"))

    assert handler_commands() == documented


def test_readme_command_table_matches_the_handlers():
    documented = table_commands(section(README.read_text(), "## Protocol"))

    assert handler_commands() == documented


def test_readme_points_to_the_protocol_document():
    protocol_section = section(README.read_text(), "## Protocol")

    assert "](docs/PROTOCOL.md)" in protocol_section
    assert "design notes" not in protocol_section


def test_readme_links_to_repository_files_resolve():
    """Every relative link of the README (``[x](docs/PROTOCOL.md)``, ``[x](LICENSE)``)
    names a file or directory that exists."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]

    assert "docs/PROTOCOL.md" in local
    assert [] == [t for t in local if not (ROOT / t).exists()]


def test_each_distribution_ships_the_same_license():
    """The plugins are built from their own directories, so each carries a copy."""
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    for project in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        assert 'license = "MIT"' in project.read_text(), project
        assert text == (project.parent / "LICENSE").read_text(), project
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
