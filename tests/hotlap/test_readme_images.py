"""The README's pictures: near the top, each link pointing at a committed PNG small enough for a repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAX_IMAGE_BYTES = 300 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Markdown images ![alt](path "title") and HTML <img src="path">.
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img\b[^>]*\bsrc=\"([^\"]+)\"")


def image_links(markdown: str) -> list[str]:
    return [markdown_path or html_path for markdown_path, html_path in IMAGE_LINK.findall(markdown)]


def test_image_links_are_found_in_both_syntaxes() -> None:
    text = '![a](docs/images/x.png) text ![b]( <docs/y.png> "title") <img alt="c" src="docs/z.png" width="40%">'
    assert image_links(text) == ["docs/images/x.png", "docs/y.png", "docs/z.png"]


def test_every_readme_image_link_points_at_a_committed_png() -> None:
    links = image_links(README.read_text())
    assert links, "the README shows no picture"
    for link in links:
        assert "://" not in link, f"{link}: the README's pictures are files in the repository"
        path = (REPO / link).resolve()
        assert path.is_file(), f"README.md links {link}, which does not exist"
        assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{link} is not a PNG"
        assert path.stat().st_size <= MAX_IMAGE_BYTES, f"{link}: {path.stat().st_size} bytes"


def test_the_readme_shows_a_plot_and_a_lap_before_the_quick_start() -> None:
    text = README.read_text()
    top = text[:text.index("## Quick start")]
    assert len(image_links(top)) >= 2, "a learning curve and a lap, near the top"
