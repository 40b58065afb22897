"""What a training run writes besides its weights: versioned checkpoints, sample grids, the loss plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load, save_file

from giftnet.config import ModelConfig
from giftnet.errors import WeightsError
from giftnet.model import build_teacher
from giftnet.training.checkpoint import Progress, checkpoint_bytes, load_checkpoint, read_metadata

# --- versioned checkpoints ------------------------------------------------------------------------


def _small_checkpoint() -> tuple[dict, dict]:
    model = build_teacher(ModelConfig(base_channels=8))
    data = checkpoint_bytes(stage="reconstruction", model=model, optimizer=torch.optim.Adam(model.parameters()),
                            scaler=torch.amp.GradScaler("cpu", init_scale=1.0), progress=Progress(1, 0, 4, 0),
                            train_config={})  # fmt: skip
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return load(data), header["__metadata__"]


def test_checkpoint_versions_unknown_refused_version_1_read(tmp_path):
    tensors, meta = _small_checkpoint()
    assert meta["version"] == "2"
    future = tmp_path / "ckpt-reconstruction-000000004.safetensors"
    save_file(tensors, future, metadata=meta | {"version": "99"})
    with pytest.raises(WeightsError, match="checkpoint format version '99' is not one this engine reads"):
        read_metadata(future)
    old = tmp_path / "old.safetensors"
    v1 = {k: v for k, v in meta.items() if k != "version"}
    save_file(tensors | {"progress": tensors["progress"][:4].clone()}, old, metadata=v1)
    model = build_teacher(ModelConfig(base_channels=8))
    progress = load_checkpoint(old, model=model, optimizer=torch.optim.Adam(model.parameters()),
                               scaler=torch.amp.GradScaler("cpu", init_scale=1.0))  # fmt: skip
    assert (progress.epoch, progress.step, progress.evaluated) == (1, 4, 4)


# --- sample grids and the loss plot (issue 13) -----------------------------------------------------


def test_sample_grids_label_their_columns_and_show_the_output_blended_as_harmonize_writes_it():
    from giftnet.harmonize import harmonize_image
    from giftnet.training.monitor import LABEL_HEIGHT, grid_image

    g = torch.Generator().manual_seed(0)
    comp, pred, real = (torch.randint(0, 256, (2, 3, 16, 16), generator=g).float() for _ in range(3))
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1.0
    mask[:, :, 4:12, 4] = 0.5  # a soft edge
    grid = grid_image(comp, pred, real, mask)
    assert grid.shape == (LABEL_HEIGHT + 2 * 16, 4 * 16, 3)
    header, body = grid[:LABEL_HEIGHT], grid[LABEL_HEIGHT:].astype(np.int64)
    assert (header < 128).any() and (header == 255).any()  # dark text on white
    tile = lambda row, col: body[16 * row : 16 * row + 16, 16 * col : 16 * col + 16].transpose(2, 0, 1)  # noqa: E731
    for i in range(2):
        assert np.array_equal(tile(i, 0), comp[i].numpy())  # composite | mask | ours | real
        assert np.array_equal(tile(i, 1), (mask[i].expand(3, -1, -1) * 255).round().numpy())
        assert np.array_equal(tile(i, 3), real[i].numpy())
        ours = tile(i, 2)
        outside = mask[i, 0].numpy() == 0
        assert np.array_equal(ours[:, outside], comp[i].numpy()[:, outside])  # untouched where the mask is 0
        assert np.array_equal(ours[:, 6, 8], pred[i, :, 6, 8].numpy())  # mask 1: the prediction
        soft = (comp[i, :, 6, 4] + 0.5 * (pred[i, :, 6, 4] - comp[i, :, 6, 4])).round()
        assert np.array_equal(ours[:, 6, 4], soft.numpy())

    class Fixed(torch.nn.Module):  # harmonize's own blend of a known prediction, at the same size
        def forward(self, image, m):
            return {"images": (pred[:1] / 255.0 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)}  # fmt: skip

    out = harmonize_image(Fixed(), comp[0].permute(1, 2, 0).byte().numpy(), mask[0, 0].numpy(), full_res=True)
    assert np.abs(out.transpose(2, 0, 1).astype(np.int64) - tile(0, 2)).max() <= 1  # float rounding of pred


def test_the_loss_plot_draws_the_stages_in_order_and_the_weighted_distillation_term():
    from giftnet.training.monitor import loss_series, plot_losses

    records = [
        {"stage": "harmonization", "step": 2, "total": 0.5, "har": 0.4, "dis": 100.0},
        {"stage": "reconstruction", "step": 2, "total": 0.3, "har": 0.3},
        {"stage": "harmonization", "step": 4, "total": 0.45, "har": 0.35, "dis": 80.0},
        {"stage": "reconstruction", "step": 4, "total": 0.2, "har": 0.2},
    ]
    series = loss_series(records, 1e-3)
    assert [stage for stage, _ in series] == ["reconstruction", "harmonization"]
    assert series[0][1] == {"total": ([2, 4], [0.3, 0.2]), "har": ([2, 4], [0.3, 0.2])}
    harm = series[1][1]
    assert list(harm) == ["total", "har", "0.001 x dis"]
    assert harm["0.001 x dis"] == ([2, 4], [pytest.approx(0.1), pytest.approx(0.08)])
    buf = __import__("io").BytesIO()
    assert plot_losses(records, buf, 1e-3) and buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
