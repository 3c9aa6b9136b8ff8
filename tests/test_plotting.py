"""Plotting: the grid-normalised density, the image grid and save_figure."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from edrepro import plotting, toy


def test_grid_density_sums_to_one_and_puts_mass_on_the_modes():
    data = toy.get("25gaussians")
    p = plotting.grid_density(data.energy, (-4.0, 4.0), 80)
    assert p.shape == (80, 80) and np.isclose(p.sum(), 1.0)
    axis = np.linspace(-4, 4, 80)
    row, col = np.unravel_index(p.argmax(), p.shape)
    # every mode of the 25 Gaussians sits at a multiple of 2/1.414 in both coordinates
    assert min(abs(axis[row] - k * 2 / 1.414) for k in range(-2, 3)) < 0.15
    assert min(abs(axis[col] - k * 2 / 1.414) for k in range(-2, 3)) < 0.15


def test_grid_density_rows_run_along_y():
    def energy(x):  # mass only where y > 0
        return torch.where(x[:, 1] > 0, 0.0, 30.0)

    p = plotting.grid_density(energy, (-1.0, 1.0), 10)
    assert p[5:].sum() > 0.99 and p[:5].sum() < 0.01


def test_image_grid_tiles_and_rescales():
    images = torch.stack([torch.full((1, 3, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = plotting.image_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 3 + 3, 2 * 4 + 3)
    assert grid[1, 1] == 0.0 and grid[1, 6] == 0.5 and grid[5, 1] == 1.0
    assert grid[5, 6] == 1.0  # empty slot stays white


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png, pdf = plotting.save_figure(fig, "test_line", folder=tmp_path)
    plt.close(fig)
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize("name", ["", "figures/x", "x.png", "a b"])
def test_save_figure_rejects_bad_names(tmp_path, name):
    fig = plt.figure()
    with pytest.raises(ValueError, match="name"):
        plotting.save_figure(fig, name, folder=tmp_path)
    plt.close(fig)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="images"):
        plotting.image_grid(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="nrow"):
        plotting.image_grid(torch.zeros(2, 3, 3), nrow=0)
    with pytest.raises(ValueError, match="curves"):
        plotting.plot_curves(plt.gca(), {}, "x", "y")
    plt.close("all")
