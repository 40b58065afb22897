"""Property tests (issue 8, item 5): the readers' naming rules and list parsing, and the kernels'
PyTorch references, on random inputs drawn by hypothesis (small sizes, a bounded number of examples)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from giftnet.kernels.masked_modconv import masked_modconv2d_reference
from giftnet.kernels.relation import relation_distill_loss_reference, relation_map_reference
from giftnet.pipeline.ihd import read_list_file, read_list_lines, split_name

FAST = settings(max_examples=40, deadline=None)

# Name parts as iHarmony4 has them (c100013, d90000012-181, a0001, 12, 7) and a few odder characters.
TOKEN = st.text(alphabet=st.sampled_from("abcxyz0123456789-.+ "), min_size=1, max_size=8).filter(
    lambda t: t.strip() == t and t not in (".", "..")
)


@FAST
@given(st.lists(TOKEN, min_size=3, max_size=6))
def test_split_name_real_is_the_first_part_and_mask_drops_the_last(parts):
    stem = "_".join(parts)
    assert split_name(stem) == (parts[0], "_".join(parts[:-1]))


@FAST
@given(st.lists(st.one_of(TOKEN, st.just("")), min_size=1, max_size=6))
def test_split_name_refuses_fewer_than_three_parts_or_an_empty_one(parts):
    stem = "_".join(parts)
    if len(parts) >= 3 and all(parts):
        assert split_name(stem) == (parts[0], "_".join(parts[:-1]))
    else:
        with pytest.raises(ValueError, match="X_Y_Z"):
            split_name(stem)


LINE = st.one_of(
    st.text(alphabet=st.sampled_from("ab_1.jpg/"), min_size=1, max_size=12),
    st.just(""),
    st.just("   "),
    st.just("# a comment"),
)


@FAST
@given(st.lists(LINE, max_size=8), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans())
def test_list_lines_keep_numbers_and_ignore_endings_blanks_and_comments(lines, newline, bom):
    expected = [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "HX_train.txt"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode() + newline.encode())
        assert read_list_lines(path) == expected


NAME = st.lists(st.text(alphabet="abc0123456789-", min_size=1, max_size=5), min_size=3, max_size=4).map("_".join)


@FAST
@given(
    st.lists(st.tuples(NAME, st.sampled_from(["bare", "folder", "subset", "windows"])), min_size=1, max_size=6),
    st.sampled_from(["\n", "\r\n"]),
)
def test_every_list_form_resolves_to_the_same_three_files(entries, newline):
    """Bare `X_Y_Z.jpg`, `composite_images/X_Y_Z.jpg`, `HX/composite_images/X_Y_Z.jpg` (either slash)."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        subset = root / "HX"
        for folder in ("composite_images", "masks", "real_images"):
            (subset / folder).mkdir(parents=True)
        lines = []
        for stem, form in entries:
            real, mask = split_name(stem)
            for path in (subset / "composite_images" / f"{stem}.jpg", subset / "masks" / f"{mask}.png",
                         subset / "real_images" / f"{real}.jpg"):  # fmt: skip
                path.touch()
            lines.append({"bare": f"{stem}.jpg", "folder": f"composite_images/{stem}.jpg",
                          "subset": f"HX/composite_images/{stem}.jpg",
                          "windows": f"HX\\composite_images\\{stem}.jpg"}[form])  # fmt: skip
        in_subset = [line for line, (_, form) in zip(lines, entries, strict=True) if form in ("bare", "folder")]
        with_subset = [line for line, (_, form) in zip(lines, entries, strict=True) if form not in ("bare", "folder")]
        (subset / "HX_train.txt").write_text(newline.join(in_subset) + newline)
        (root / "IHD_train.txt").write_text(newline.join(with_subset) + newline)
        pairs = read_list_file(subset / "HX_train.txt")[0] + read_list_file(root / "IHD_train.txt", root)[0]
        stems = [s for s, form in entries if form in ("bare", "folder")] + [
            s for s, form in entries if form not in ("bare", "folder")
        ]
        assert [p.name for p in pairs] == stems
        for p in pairs:
            real, mask = split_name(p.name)
            assert p.subset == "HX"
            assert p.composite == subset / "composite_images" / f"{p.name}.jpg"
            assert p.mask == subset / "masks" / f"{mask}.png" and p.real == subset / "real_images" / f"{real}.jpg"


@st.composite
def masked_features(draw, max_channels: int = 6):
    """(x, mask): random shape (batch 1-2, odd sizes allowed) and a binary, soft, empty or full mask."""
    b, c = draw(st.integers(1, 2)), draw(st.integers(1, max_channels))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    x = torch.randn(b, c, h, w, generator=gen) * scale
    kind = draw(st.sampled_from(["binary", "soft", "empty", "full"]))
    u = torch.rand(b, 1, h, w, generator=gen)
    mask = {"binary": (u > 0.5).float(), "soft": u * (u > 0.3), "empty": u * 0, "full": u * 0 + 1}[kind]
    return x, mask, gen


@FAST
@given(masked_features(), st.booleans())
def test_masked_modconv_is_finite_and_leaves_the_background_bit_identical(data, demodulate):
    x, mask, gen = data
    c = x.shape[1]
    weight = torch.randn(c, c, 3, 3, generator=gen)
    style = torch.randn(x.shape[0], c, generator=gen)
    y = masked_modconv2d_reference(x, weight, style, mask, demodulate=demodulate)
    assert y.shape == x.shape and torch.isfinite(y).all()
    background = (mask == 0).expand_as(x)
    assert torch.equal(y[background], x[background])  # bit for bit, not approximately


@FAST
@given(masked_features(max_channels=5), st.sampled_from([1e-3, 0.01, 1.0]))
def test_relation_maps_are_distributions_over_the_pixels(data, gamma):
    feat, mask, gen = data
    r = relation_map_reference(feat, mask, gamma=gamma)
    b, _, h, w = feat.shape
    assert r.shape == (b, h * w) and r.dtype == torch.float32
    assert torch.isfinite(r).all() and (r >= 0).all()
    torch.testing.assert_close(r.sum(dim=1), torch.ones(b), atol=1e-5, rtol=0)
    teacher = feat + 0.1 * torch.randn(feat.shape, generator=gen)
    loss = relation_distill_loss_reference(feat, teacher, mask, gamma=gamma)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss >= 0
    assert relation_distill_loss_reference(feat, feat, mask, gamma=gamma) == 0
