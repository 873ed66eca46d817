from __future__ import annotations

from pathlib import Path

import pytest

from musegnn_sc.datasets import shared_data as _find_shared_data


def _shared_data_folder() -> Path | None:
    """The real public datasets, found as the library finds them (``msg.datasets.shared_data``).

    In order: the folder named by ``MUSEGNN_SC_DATA``, ``../shared/data`` beside the clone, then beside the working
    directory and its parent; ``None`` where there is none (a user's fresh clone: tests using the data skip).
    """
    try:
        return _find_shared_data()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = _shared_data_folder()
    if folder is None:
        pytest.skip("the shared data folder was not found (set MUSEGNN_SC_DATA or put it at ../shared/data)")
    return folder
