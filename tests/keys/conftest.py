"""Test configuration for the keys tests.

Hypothesis writes a cache (``.hypothesis/``) into the current directory while pytest is
still collecting. pyproject.toml sets ``norecursedirs`` to a list that *replaces* pytest's
defaults, so on the next run the Hypothesis plugin warns about that directory during
collection, and ``filterwarnings = error`` turns the warning into a collection error for
the whole suite. Until the configuration is fixed, point Hypothesis's storage outside the
repository (unless the caller chose a place with HYPOTHESIS_STORAGE_DIRECTORY).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"hotline-hypothesis-{os.getuid()}")
