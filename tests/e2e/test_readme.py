"""The README's list of what `scripts/test` installs (Requirements) names
exactly what the install scripts install. Each install in those scripts is
marked with a comment `# installs: NAME...`; this checks the README against
the marks, and each mark against the script's code (or, for the Python venv,
against the pinned requirements), so neither can drift alone."""

import re

from conftest import REPO

SCRIPTS = REPO / "scripts"
# What scripts/test runs first, and what that runs (checked below).
INSTALLERS = ["install-test-deps.sh", "install-azurite.sh", "install-python-deps.sh", "header.sh"]
MARK = re.compile(r"#\s+installs:((?:\s+[a-z0-9][a-z0-9+_.-]*)+)\s*$")
BEGIN = "<!-- tools-installed-by-scripts/test"
END = "<!-- end of tools-installed-by-scripts/test -->"


def marks():
    """{name: script} from every `# installs:` comment."""
    found = {}
    for script in INSTALLERS:
        for line in (SCRIPTS / script).read_text().splitlines():
            m = MARK.search(line)
            if m:
                for name in m.group(1).split():
                    assert name not in found, f"{name} is marked in {found[name]} and {script}"
                    found[name] = script
    return found


def readme_list():
    text = (REPO / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "the README's list of installed tools lost its markers"
    block = text[text.index(BEGIN):text.index(END)]
    block = block[block.index("-->") + 3:]  # after the opening comment
    return set(re.findall(r"`([a-z0-9][a-z0-9+_.-]*)`", block))


def test_scripts_test_runs_every_install_script_checked_here():
    assert "scripts/install-test-deps.sh" in (SCRIPTS / "test").read_text()
    assert "scripts/header.sh" in (SCRIPTS / "test").read_text()
    deps = (SCRIPTS / "install-test-deps.sh").read_text()
    assert "scripts/install-azurite.sh" in deps and "scripts/install-python-deps.sh" in deps
    # No other install script that this test would not read.
    assert {p.name for p in SCRIPTS.glob("install-*.sh")} <= set(INSTALLERS)


def test_each_mark_sits_on_the_command_that_installs_it():
    """A mark is on the install command's line, or on the line before it."""
    pinned = {line.split("==")[0].strip().lower()
              for line in (REPO / "tests/e2e/requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    install = re.compile(r"cargo install|apt\+=|npm install|rustup component add|pip\S*\" install")
    for script in INSTALLERS:
        lines = (SCRIPTS / script).read_text().splitlines()
        for i, line in enumerate(lines):
            m = MARK.search(line)
            if not m:
                continue
            code = MARK.sub("", line).strip()
            if not code:  # a mark of its own: the next line that is not a comment
                code = next(ln for ln in lines[i + 1:] if not ln.lstrip().startswith("#"))
            assert install.search(code), f"{script}: the mark {line.strip()!r} is not on an install command: {code!r}"
            for name in m.group(1).split():
                if script == "install-python-deps.sh":
                    assert name in pinned, f"{name} is marked in {script} but not pinned in tests/e2e/requirements.txt"
                else:
                    assert name in code, f"{script}: {name} is marked but {code!r} does not install it"


def test_readme_lists_exactly_what_the_install_scripts_install():
    marked = set(marks())
    listed = readme_list()
    assert listed == marked, (f"in the README but not marked in an install script: {sorted(listed - marked)}; "
                              f"marked but not in the README: {sorted(marked - listed)}")
