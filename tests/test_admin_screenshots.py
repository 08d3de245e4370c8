"""docs/screenshots.py walks the README's story in a real browser against a real
server; every screenshot it promises must come out as a PNG of the viewport width."""

import importlib.util
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_screenshots():
    spec = importlib.util.spec_from_file_location("promptproxy_screenshots",
                                                  ROOT / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path):
    header = Path(path).read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert header[12:16] == b"IHDR", f"{path} has no IHDR chunk first"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_screenshots_walk_the_readme_story(tmp_path):
    screenshots = load_screenshots()
    if not Path(screenshots.CHROMIUM).exists():
        pytest.skip(f"{screenshots.CHROMIUM} is not installed")

    written = screenshots.main(tmp_path)

    expected = ["tables.png", "create_tom.png", "create_api_key.png", "create_openai.png",
                "existing_model.png", "prompt.png"]
    assert [p.name for p in written] == expected
    for name in expected:
        width, height = png_size(tmp_path / name)
        assert width == screenshots.VIEWPORT["width"], name
        assert height >= screenshots.VIEWPORT["height"], name  # full page: at least one screen
