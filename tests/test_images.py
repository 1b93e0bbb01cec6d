"""Sample grids: exact pixel placement, level scaling and PNG round trips."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixel_lightning.images import MIN_PICTURE_SIDE, make_grid, picture, save_png, to_uint8


def test_levels_map_to_full_intensity_range():
    assert to_uint8(torch.tensor([0, 1]), 2).tolist() == [0, 255]
    assert to_uint8(torch.tensor([0, 1, 2, 3]), 4).tolist() == [0, 85, 170, 255]
    assert to_uint8(torch.arange(256), 256).tolist() == list(range(256))


def test_grid_places_each_image_at_its_tile():
    images = torch.arange(5).view(5, 1, 1, 1).expand(5, 1, 2, 3)  # image i filled with level i
    grid = make_grid(images, num_levels=256, nrow=3, padding=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    for i in range(5):
        y, x = 1 + (i // 3) * 3, 1 + (i % 3) * 4
        assert (grid[y : y + 2, x : x + 3] == i).all()
    assert (grid[0] == 128).all() and (grid[4:6, 9:12] == 128).all()  # border and the empty 6th tile


def test_a_scaled_grid_repeats_every_pixel_whole_and_keeps_the_border_thin():
    images = torch.randint(0, 256, (5, 3, 2, 3))
    grid = make_grid(images, num_levels=256, nrow=3, padding=1, scale=4)
    assert grid.shape == (2 * (4 * 2 + 1) + 1, 3 * (4 * 3 + 1) + 1, 3)
    for i in range(5):
        y, x = 1 + (i // 3) * 9, 1 + (i % 3) * 13
        tile = grid[y : y + 8, x : x + 12]  # image i, each pixel a 4x4 block of its exact value
        expected = images[i].permute(1, 2, 0).numpy().astype(np.uint8).repeat(4, axis=0).repeat(4, axis=1)
        assert np.array_equal(tile, expected)
    assert (grid[0] == 128).all() and (grid[9] == 128).all() and (grid[:, 13] == 128).all()  # 1-pixel borders
    with pytest.raises(ValueError, match="scale"):
        make_grid(images, 256, scale=0)


@pytest.mark.parametrize(
    "shape, nrow, scale",
    [
        ((16, 1, 28, 28), None, 3),
        ((1, 1, 28, 28), None, 9),
        ((64, 3, 32, 32), None, 1),
        ((4, 1, 28, 28), 6, 9),
        ((2, 1, 8, 8), 1, 32),
    ],
)
def test_a_picture_is_the_smallest_whole_enlargement_at_least_256_pixels_a_side(shape, nrow, scale):
    images = torch.randint(0, 2, shape)
    shown = picture(images, 2, nrow=nrow)
    assert np.array_equal(shown, make_grid(images, 2, nrow=nrow, scale=scale))
    assert min(shown.shape[:2]) >= MIN_PICTURE_SIDE
    if scale > 1:  # one step smaller would be under the minimum on some side
        assert min(make_grid(images, 2, nrow=nrow, scale=scale - 1).shape[:2]) < MIN_PICTURE_SIDE


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip(tmp_path, channels):
    images = torch.randint(0, 256, (4, channels, 5, 5))
    grid = make_grid(images, 256)
    path = save_png(grid, tmp_path / "sub" / "grid.png")
    assert np.array_equal(np.array(Image.open(path)).reshape(grid.shape), grid)


def test_a_full_disk_or_unwritable_folder_is_one_paragraph_and_keeps_the_earlier_grid(tmp_path, monkeypatch):
    import errno

    from pixel_lightning.errors import OutputError

    grid = make_grid(torch.ones(1, 1, 2, 2, dtype=torch.long), 2)
    path = save_png(grid, tmp_path / "epoch_000.png")
    before = path.read_bytes()

    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OutputError, match=r"^Could not write the image .*epoch_000\.png: No space left on device\."):
        save_png(grid, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["epoch_000.png"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match=r"a-file/samples/x\.png: Not a directory\. Free space"):
        save_png(grid, tmp_path / "a-file" / "samples" / "x.png")
