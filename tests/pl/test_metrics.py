from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from musegnn_sc.pl._metrics import metrics, summarize_table

LONG = pd.DataFrame(
    {
        "method": ["musegnn", "musegnn", "pca", "pca", "gae", "gae"],
        "seed": [0, 1, 0, 1, 0, 1],
        "auc": [0.90, 0.92, 0.70, 0.72, 0.80, 0.80],
        "asw": [0.50, 0.60, 0.30, 0.20, 0.65, 0.55],
        "avg_rank": [1.0, 1.0, 3.0, 3.0, 2.0, 2.0],
    }
)


def test_summary_averages_seeds():
    mean, sd = summarize_table(LONG)
    assert list(mean.index) == ["musegnn", "pca", "gae"] and list(mean.columns) == ["auc", "asw", "avg_rank"]
    assert mean.loc["musegnn", "auc"] == pytest.approx(0.91)
    assert sd.loc["pca", "asw"] == pytest.approx(np.std([0.3, 0.2], ddof=1))
    wide_mean, wide_sd = summarize_table(mean)
    pd.testing.assert_frame_equal(wide_mean, mean)
    assert wide_sd is None


def test_grid_marks_best_per_metric(tmp_path):
    ax = metrics(LONG, show=False, save=tmp_path / "table.png")
    assert isinstance(ax, Axes)
    assert (tmp_path / "table.png").stat().st_size > 0
    assert len(ax.texts) == 9
    bold = {t.get_text().split("\n")[0] for t in ax.texts if t.get_fontweight() == "bold"}
    # best auc: musegnn 0.910; best asw: gae 0.600; best (lowest) avg_rank: musegnn 1.000
    assert bold == {"0.910", "0.600", "1.000"}
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 3)
    assert image[0, 2] == 1.0 and image[1, 2] == 0.0


def test_higher_is_better_override():
    ax = metrics(LONG, higher_is_better={"auc": False}, show=False)
    bold = [t.get_text().split("\n")[0] for t in ax.texts if t.get_fontweight() == "bold"]
    assert "0.710" in bold
    with pytest.raises(ValueError, match="numeric"):
        metrics(pd.DataFrame({"method": ["a"], "note": ["x"]}), show=False)


def test_missing_metric_stays_blank():
    table = LONG.assign(ilisi=np.nan, auc=[0.9, np.nan, 0.7, 0.7, 0.8, 0.8])
    ax = metrics(table, show=False)
    image = ax.get_images()[0].get_array()
    assert image.mask[:, 3].all() and not image.mask[:, :3].any()
    bold = {t.get_text().split("\n")[0] for t in ax.texts if t.get_fontweight() == "bold"}
    assert "nan" not in bold and len(bold) == 3
