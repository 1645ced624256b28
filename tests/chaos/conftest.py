"""The chaos tests use the integration fixtures (broker, topic helpers, state dir)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from conftest import admin, bootstrap, kafka, tmp_state_dir  # noqa: E402,F401
