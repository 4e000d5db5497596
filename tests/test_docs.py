"""The documentation site and the README a new user lands on.

The site (mkdocs.yml, docs/) builds with `mkdocs build --strict`, which fails on a link to a missing page
or heading; every page under docs/ is reachable from the nav; the README links only to files that exist;
and no user-facing page cites the project's internal issue numbers (git history keeps those).
mkdocs is a dev dependency, so a missing install fails here rather than skipping the check.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# [text](target) and [text](target "title"), not images' data URIs; targets split from a #fragment.
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ISSUE_NUMBER = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)


def nav_pages(nav) -> list[str]:
    """Every page path named in mkdocs.yml's nav, in order (nested sections included)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


class MkDocsLoader(yaml.SafeLoader):
    """The safe loader plus MkDocs' one tag used in mkdocs.yml (`!relative $config_dir`), read as text."""


MkDocsLoader.add_constructor("!relative", lambda loader, node: loader.construct_scalar(node))


def load_mkdocs_config() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=MkDocsLoader)


def user_facing_pages() -> list[Path]:
    """The README, every docs page, and the files the site includes from outside docs/."""
    included = [ROOT / "benchmarks" / "README.md", ROOT / "CONTRIBUTING.md"]
    return [README, *sorted(DOCS.rglob("*.md")), *included]


def test_the_site_builds_strictly_offline(tmp_path):
    # Run from another folder: the includes of files outside docs/ must not depend on the caller's cwd.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # that variable only hides an end-of-life banner
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "benchmarks.html").is_file()


def test_the_site_loads_no_web_fonts_so_it_builds_and_reads_offline():
    assert load_mkdocs_config()["theme"].get("font") is False


def test_every_docs_page_is_in_the_nav():
    listed = set(nav_pages(load_mkdocs_config()["nav"]))
    on_disk = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert sorted(on_disk - listed) == [], "pages under docs/ missing from mkdocs.yml's nav"
    assert sorted(listed - on_disk) == [], "nav entries of mkdocs.yml with no page under docs/"


def test_the_readme_links_only_to_files_that_exist():
    missing = []
    for target in MARKDOWN_LINK.findall(README.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # web addresses and anchors within the README
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            missing.append(target)
    assert missing == [], f"README.md links to files that do not exist: {missing}"


def test_the_readme_links_to_the_docs_and_stays_short():
    text = README.read_text()
    linked = {target.split("#", 1)[0] for target in MARKDOWN_LINK.findall(text)}
    assert {"docs/getting-started.md", "docs/studies/index.md", "docs/detectors/index.md"} <= linked
    assert text.index("make demo") < text.index("make test") < 400, "the two commands come first"
    assert len(text.splitlines()) < 120, "README.md is the landing page: move details to a docs/ page"


def test_no_user_facing_page_cites_an_internal_issue_number():
    cited = []
    for page in user_facing_pages():
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if ISSUE_NUMBER.search(line):
                cited.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert cited == [], "internal issue numbers in user-facing text:\n" + "\n".join(cited)


def test_the_link_check_finds_a_missing_file_and_an_issue_number():
    # The checks above are only as good as their patterns: each must catch what it exists to catch.
    assert MARKDOWN_LINK.findall("see [Data](docs/nope.md#formats) and [site](https://x.org)") == [
        "docs/nope.md#formats", "https://x.org"]
    assert ISSUE_NUMBER.search("Throughput settings (issue 13)")
    assert ISSUE_NUMBER.search("see issues #4")
    assert not ISSUE_NUMBER.search("a known issue with 2 workers")
