"""giftnet.bench.sites: skippable-tile counting on synthetic masks, and the byte/FLOP model by hand."""

import importlib
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from giftnet.bench import sites, sites_model
from giftnet.bench.sites_masks import iter_masks, mask_statistics, parse_tile, skippable_fraction
from giftnet.bench.sites_model import GPUS, Shape, launch_us, modconv_ideal, modconv_traced, modconv_triton, total
from giftnet.bench.sites_trace import Launch, trace
from giftnet.errors import DataError, UsageError

TILES = ("8x8", "16x16", "8x32", "3x5", "flat64", "flat7")


def _n_tiles(h: int, w: int, tile: str) -> int:
    kind, a, b = parse_tile(tile)
    return -(-h * w // a) if kind == "flat" else -(-h // a) * -(-w // b)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("hw", [(32, 32), (13, 10), (5, 37)])
def test_empty_full_and_one_pixel(tile, hw):
    h, w = hw
    assert skippable_fraction(torch.zeros(h, w), tile).item() == 1.0
    assert skippable_fraction(torch.ones(h, w), tile).item() == 0.0
    n = _n_tiles(h, w, tile)
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w - 1)]:  # corners land in clipped border tiles
        m = torch.zeros(h, w)
        m[y, x] = 1e-3  # soft: any non-zero cell is foreground
        assert skippable_fraction(m, tile).item() == pytest.approx((n - 1) / n, abs=1e-7)


def test_border_tiles_counted_by_hand():
    # 13 x 10 map in 8x8 tiles: 2 x 2 tiles, the bottom-right one 5 x 2 cells.
    m = torch.zeros(13, 10)
    m[12, 9] = 1.0
    assert skippable_fraction(m, "8x8").item() == 0.75
    m[0, 0] = 1.0
    assert skippable_fraction(m, "8x8").item() == 0.5
    # flat7 over 130 pixels: 19 tiles, the last holds 4 pixels; pixels 0 and 129 -> 2 busy.
    assert skippable_fraction(m, "flat7").item() == pytest.approx(17 / 19)
    # a blob spanning two tiles of a row
    b = torch.zeros(16, 16)
    b[2:4, 6:10] = 1.0
    assert skippable_fraction(b, "8x8").item() == 0.5


def test_bad_tile_is_a_usage_error():
    for bad in ("8", "0x8", "flat0", "8x"):
        with pytest.raises(UsageError, match="tile"):
            parse_tile(bad)


def _save(path, arr):
    Image.fromarray(arr).save(path)


def test_statistics_from_folder_and_zip(tmp_path):
    empty = np.zeros((256, 256), np.uint8)
    dot = empty.copy()
    dot[100, 37] = 255
    folder = tmp_path / "masks"
    folder.mkdir()
    _save(folder / "a.png", empty)
    _save(folder / "b.png", dot)
    _save(folder / "c.png", np.stack([np.full((64, 96), 255, np.uint8)] * 3, axis=-1))  # RGB, not 256
    (folder / "notes.txt").write_text("ignored")
    st = mask_statistics(iter_masks(folder), (256, 32), ("8x8",))
    assert st["count"] == 3
    s256, s32 = st["sides"][256], st["sides"][32]
    np.testing.assert_allclose(s256["skip"]["8x8"], [1.0, 1023 / 1024, 0.0])
    np.testing.assert_allclose(s32["skip"]["8x8"], [1.0, 15 / 16, 0.0])
    np.testing.assert_allclose(s32["fg"], [0.0, 1 / 65536, 1.0], rtol=1e-5)
    np.testing.assert_allclose(s32["touched"], [0.0, 1 / 1024, 1.0])
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"masks/{f.name}")
    st2 = mask_statistics(iter_masks(archive), (256, 32), ("8x8",))
    np.testing.assert_array_equal(st2["sides"][32]["skip"]["8x8"], s32["skip"]["8x8"])


def test_mask_sources_fail_with_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such"):
        list(iter_masks(tmp_path / "missing"))
    with pytest.raises(DataError, match="no mask images"):
        list(iter_masks(tmp_path))
    (tmp_path / "x.zip").write_text("not a zip")
    with pytest.raises(DataError, match="neither"):
        list(iter_masks(tmp_path / "x.zip"))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        list(iter_masks(tmp_path))


# --- the byte / FLOP model -----------------------------------------------------------------------

S = Shape(b=2, c=32, side=16)  # F = 2*32*256*2 = 32768 B, mask 1024 B, conv 2*2*256*32*32*9 FLOPs
F_, M_, Q_ = 32768, 1024, 2 * 2 * 256 * 32 * 32 * 9


def test_shape_by_hand():
    assert (S.feat, S.mask, S.conv_flops) == (F_, M_, Q_)


def test_ideal_and_triton_forward_by_hand():
    fwd, bwd = modconv_ideal(S)
    assert total(fwd)["dram"] == 2 * F_ + M_ and total(bwd)["dram"] == 3 * F_ + M_
    assert total(fwd + bwd)["tc_flops"] == 3 * Q_
    fwd, bwd = modconv_triton(S, GPUS[0])
    kernel = fwd[-1]
    assert kernel.dram == 2 * F_ + M_ and kernel.tc_flops == Q_
    # C = 32: one output-channel tile of 32, so each tap requests the input (and mask) once;
    # 4 pixel tiles of 64 per sample, each loading 9 x 32 x 32 bf16 weights; residual + mask.
    assert kernel.l2 == 9 * (F_ + M_) + 2 * 4 * 9 * 32 * 32 * 2 + F_ + M_
    # the three convolutions run in our kernels; the torch math on G adds small matmuls
    assert sum(x.tc_flops for x in fwd + bwd if not x.name.startswith("aten.")) == 3 * Q_


def test_traced_cudnn_conv_by_hand():
    fwd, bwd = modconv_traced(S, "cudnn")
    wf, wb = 32 * 32 * 9 * 4, 32 * 32 * 9 * 2
    # fwd: cast w to bf16 (read fp32, write bf16); conv reads x and w, writes y
    assert [x.name for x in fwd] == ["aten._to_copy", "aten.convolution"]
    assert total(fwd)["dram"] == (wf + wb) + (F_ + wb + F_)
    assert total(fwd)["tc_flops"] == Q_
    conv_bwd = [x for x in bwd if x.name == "aten.convolution_backward"]
    assert len(conv_bwd) == 1 and conv_bwd[0].tc_flops == 2 * Q_
    assert conv_bwd[0].dram == (F_ + F_ + wb) + (F_ + wb)  # reads dy, x, w; writes dx, dw


def test_grouped_conv_flops_count_groups():
    fwd, bwd = modconv_traced(S, "grouped")
    assert total(fwd + bwd)["tc_flops"] == 3 * Q_


def test_trace_skips_views_and_counts_broadcast_once():
    x = torch.empty(4, 8, device="meta")
    row = torch.empty(8, device="meta")
    launches = trace(lambda: (x.t().contiguous(), x + row.expand(4, 8)))
    assert [x.name for x in launches] == ["aten.clone", "aten.add"]
    assert launches[1].dram == 4 * 8 * 4 + 8 * 4 + 4 * 8 * 4


def test_relation_triton_moves_seven_feature_passes():
    s = Shape(b=2, c=64, side=16)
    fwd, bwd = sites_model.relation_triton(s)
    z = s.b * s.p * 4
    parts = s.b * -(-s.p // 64) * 64 * 4  # (B, P, C) fp32 partials
    per_pixel = (s.mask + z) + z + 2 * z + 4 * z + 3 * z  # mask copy, sums, logits, terms, grad
    assert total(fwd + bwd)["dram"] == 7 * s.feat + per_pixel + 6 * parts
    assert total(fwd + bwd)["launches"] == 6  # the mask copy (none when it is fp32) + 4 + 1


def test_roofline_time_and_skip_bounds():
    gpu = GPUS[0]
    big = Launch("x", dram=936e6, tc_flops=0.0)  # 936 MB at 936 GB/s: 1 ms
    assert launch_us(big, gpu) == pytest.approx(1000.0)
    assert launch_us(Launch("t", dram=1.0), gpu) == sites_model.LAUNCH_FLOOR_US
    e1 = Shape(16, 32, 256)
    assert sites.skip_speedup(e1, 0.0)[gpu.name] == pytest.approx(1.0)
    half, most = sites.skip_speedup(e1, 0.5), sites.skip_speedup(e1, 0.9)
    for g in GPUS:
        assert 1.0 < half[g.name] < most[g.name] <= 1 / (1 - 0.9) + 1e-9


# --- links to the code the model restates (skip once that code is restructured away) -------------


def _optional(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pytest.skip(f"{module}.{name} no longer exists; the model restates an older revision")


def test_mirrors_match_the_originals():
    from giftnet.bench.sites_mirror import masked_modconv2d_grouped
    from giftnet.kernels.masked_modconv import masked_modconv2d_reference

    b, c = 2, 8
    w, s = torch.randn(c, c, 3, 3), torch.rand(b, c) + 0.5
    x, m = torch.randn(b, c, 6, 6), torch.rand(b, 1, 6, 6)
    torch.testing.assert_close(
        masked_modconv2d_grouped(x, w, s, m), masked_modconv2d_reference(x, w, s, m), rtol=1e-4, atol=1e-5
    )


def test_glue_counts_match_todays_code():
    from giftnet.kernels.masked_modconv import demodulation_coefficients

    fwd_pack = _optional("giftnet.kernels.masked_modconv.launch", "pack_weight_forward")
    bwd_pack = _optional("giftnet.kernels.masked_modconv.launch", "pack_weight_transposed")
    w = torch.empty(32, 32, 3, 3, device="meta")
    style = torch.empty(2, 32, device="meta", dtype=torch.bfloat16)

    def forward_glue():
        s = style.float()
        demodulation_coefficients(w, s)
        fwd_pack(w, torch.bfloat16)

    def backward_glue():
        style.float()  # the demodulation is the forward's, saved for the backward
        bwd_pack(w, torch.bfloat16)

    assert len(trace(forward_glue)) == sites_model.MODCONV_GLUE_FWD
    assert len(trace(backward_glue)) == sites_model.MODCONV_GLUE_BWD  # allocations launch nothing


def test_slots_match_todays_launcher():
    choose = _optional("giftnet.kernels.masked_modconv.launch_grads", "choose_slots")
    for c, side in sites_model.site_shapes().values():
        for gpu in GPUS:
            sl = choose(sites_model.BATCH, c, side, side, gpu.sms)
            assert sites_model.grad_slots(Shape(sites_model.BATCH, c, side), gpu.sms) == (sl.count, sl.n_bands)


def test_cli_writes_the_report(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    dot = np.zeros((256, 256), np.uint8)
    dot[5:9, 5:9] = 255
    _save(folder / "a.png", dot)
    out = tmp_path / "out" / "sites.md"
    assert sites.main(["--masks", str(folder), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Estimates from data flow" in text and "| E4 | triton |" in text and "| D3 | compile (est.) |" in text
    assert "| E1 | triton skip: " in text and "### Tiles the kernels skip" in text
    assert "git " in text and "RTX 3090" in text and "H200" in text
    assert "--masks .../" in text and f"--masks {folder}" not in text
