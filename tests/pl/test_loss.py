from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from musegnn_sc.pl._loss import history_frame, loss_history

HIST = pd.DataFrame(
    {"loss": [3.0, 2.0, 1.5], "bce": [1.0, 0.8, 0.7], "sim": [-0.1, -0.5, -0.8], "infonce": [2.0, 1.7, 1.6]},
    index=pd.Index([0, 1, 2], name="epoch"),
)


class _Model:
    history = HIST


def test_from_gdata_model_and_frame(gdata, tmp_path):
    gdata.uns["musegnn"] = {"history": {"epoch": np.arange(3), **{c: HIST[c].to_numpy() for c in HIST}}}
    for src in (gdata, _Model(), HIST, HIST.reset_index().to_dict("records")):
        pd.testing.assert_frame_equal(history_frame(src), HIST, check_dtype=False)
    ax = loss_history(gdata, show=False, save=tmp_path / "loss.png")
    assert isinstance(ax, Axes)
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "bce", "sim", "infonce"]
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), HIST["sim"])


def test_keys_log_and_errors(gdata):
    ax = loss_history(HIST, keys=["loss", "bce"], log=True, show=False)
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"
    with pytest.raises(KeyError, match="not in the loss history"):
        loss_history(HIST, keys=["kl"], show=False)
    with pytest.raises(KeyError, match="train_musegnn"):
        loss_history(gdata, show=False)
    with pytest.raises(ValueError, match="empty"):
        loss_history(HIST.iloc[:0], show=False)
