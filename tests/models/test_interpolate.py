"""resize_bicubic against torch.nn.functional.interpolate(mode="bicubic", align_corners=False)."""

import jax
import numpy as np
import pytest
import torch

from tgg_jax.models.interpolate import bicubic_matrix, resize_bicubic


def torch_bicubic(x_nhwc: np.ndarray, size) -> np.ndarray:
    nchw = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(nchw, size=size, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).numpy()


# 37 -> 24: DINOv2-L's 518 px grid at 336 px; the rest cover up/down scaling, non-square grids,
# identity and single-pixel edges where every tap is clamped.
@pytest.mark.parametrize("in_hw,out_hw", [((37, 37), (24, 24)), ((37, 37), (4, 4)), ((7, 7), (10, 10)),
                                          ((4, 4), (16, 16)), ((7, 5), (3, 11)), ((6, 6), (6, 6)),
                                          ((1, 3), (4, 2)), ((5, 9), (1, 1))])
def test_matches_torch(in_hw, out_hw):
    x = np.random.default_rng(sum(in_hw + out_hw)).standard_normal((2, *in_hw, 5)).astype(np.float32)
    out = np.asarray(resize_bicubic(jax.numpy.asarray(x), out_hw))
    assert out.shape == (2, *out_hw, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, torch_bicubic(x, out_hw), atol=1e-5, rtol=0)


def test_differs_from_jax_image_resize():
    # The reason this module exists: jax.image.resize (a = -0.5, antialiased) is not torch's bicubic.
    x = np.random.default_rng(0).standard_normal((1, 37, 37, 3)).astype(np.float32)
    ref = torch_bicubic(x, (24, 24))
    jax_resized = np.asarray(jax.image.resize(x, (1, 24, 24, 3), method="bicubic"))
    assert np.abs(jax_resized - ref).max() > 1e-2


def test_one_dimensional_weights_match_torch():
    # Resizing the identity gives torch's float32 interpolation matrix column by column.
    for n_in, n_out in [(37, 24), (4, 10), (3, 1), (7, 3)]:
        eye = torch.eye(n_in, dtype=torch.float32).reshape(n_in, 1, n_in, 1)
        ref = torch.nn.functional.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)
        np.testing.assert_allclose(bicubic_matrix(n_in, n_out), ref.reshape(n_in, n_out).T.numpy(),
                                   atol=1e-6, rtol=0)


def test_hand_worked_upscale_2_to_4():
    # Output pixel 0 samples source -0.25 (= (0 + 0.5) * 2/4 - 0.5). Its taps -2, -1, 0, 1 lie at
    # distances 1.75, 0.75, 0.25, 1.25; Keys' kernel with a = -0.75 gives -0.03515625, 0.26171875,
    # 0.87890625, -0.10546875. Taps -2 and -1 clamp onto pixel 0, so row 0 is (1.10546875, -0.10546875);
    # output pixel 1 samples 0.25: taps -1..2 at 1.25, 0.25, 0.75, 1.75, so (0.7734375, 0.2265625).
    m = bicubic_matrix(2, 4)
    np.testing.assert_allclose(m[0], [1.10546875, -0.10546875], atol=1e-7, rtol=0)
    np.testing.assert_allclose(m[1], [0.7734375, 0.2265625], atol=1e-7, rtol=0)
    np.testing.assert_allclose(m[::-1, ::-1], m, atol=1e-7, rtol=0)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="H, W, C"):
        resize_bicubic(jax.numpy.zeros((4, 4)), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        bicubic_matrix(4, 0)
