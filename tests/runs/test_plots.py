"""The report's heat map reads in percent, like its cells and tables."""

import numpy as np

from hybridcert.reports import plots


def test_heatmap_colour_bar_is_in_percent(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    acc = np.array([[0.9, 0.5], [0.25, 0.0]])
    path = plots.accuracy_heatmap(acc, tmp_path / "h.png", "t", eps_grid=(0.0, 0.5),
                                  token_grid=(0, 1))
    assert path.exists()
    image_axes, bar = figures[0].axes
    assert bar.get_ylabel() == "certified accuracy (%)"
    assert bar.get_ylim() == (0.0, 100.0)
    assert np.allclose(image_axes.images[0].get_array(), 100 * acc)
    assert [t.get_text() for t in image_axes.texts] == ["90", "50", "25", "0"]
