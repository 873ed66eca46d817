from __future__ import annotations

from pathlib import Path

import pytest

#: Real public datasets beside the repository (absent on a user's fresh clone: tests using them skip).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
