"""The repo deploys as a Hugging Face Space as-is: config consistent with what is pinned and shipped."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _space() -> dict:
    return yaml.safe_load((ROOT / "Space.yaml").read_text())


def test_space_config_matches_the_pinned_stack():
    import gradio

    space = _space()
    assert space["sdk"] == "gradio" and (ROOT / space["app_file"]).is_file()
    pins = dict(re.findall(r"^([\w.-]+)==([\w.]+)", (ROOT / "requirements.txt").read_text(), re.M))
    assert space["sdk_version"] == pins["gradio"] == gradio.__version__
    assert space["python_version"] == "3.11"
    assert space["datasets"] and space["models"]


def test_readme_front_matter_agrees_with_space_yaml():
    """Spaces read README.md's front matter: every key there must say what Space.yaml says."""
    text = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md has no YAML front matter; Spaces need it (see docs/SPACES.md)"
    front = yaml.safe_load(match.group(1))
    space = _space()
    assert {k: v for k, v in front.items() if k in space} == {k: space[k] for k in front if k in space}
    assert {"sdk", "sdk_version", "app_file", "python_version"} <= front.keys()


def test_examples_are_small_and_shipped():
    """The example row must not depend on ../shared at run time, and must stay light for the repo."""
    examples = sorted((ROOT / "examples").glob("*.jpg"))
    assert len(examples) >= 5
    assert sum(p.stat().st_size for p in examples) < 100_000
