"""Sample grids: exact pixel placement, level scaling and PNG round trips."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixel_lightning.images import make_grid, save_png, to_uint8


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
