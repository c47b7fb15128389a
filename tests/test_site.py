"""The documentation site (mkdocs.yml, docs/, API reference from the docstrings) builds with
`mkdocs build --strict`: no broken link, no page left out of the nav, no docstring that griffe
cannot parse. Needs the `docs` extra; without it the test fails rather than skips."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # silence Material's MkDocs 2.0 banner
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, (
        "mkdocs build --strict failed (install the docs extra: pip install -e '.[docs]'):\n"
        + proc.stdout + proc.stderr
    )
    for page in ("index.html", "method/index.html", "timm/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    for img in ("method.png", "speed_scaling.png", "projection_mnist-resnet10t-100.png"):
        assert (site / "img" / img).is_file(), img
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("MultiMixHead", "distill_weight", "MultiMixTrainer", "TrainingConfig", "load_data"):
        assert name in api, name
