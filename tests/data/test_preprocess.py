"""Image preprocessing against hand-worked pixels and Hugging Face's CLIP / BiT processors."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tgg_jax.data import coords
from tgg_jax.data.preprocess import (BadImageError, crop_object, expand_to_square, load_image,
                                     normalize, preprocess_image)
from tgg_jax.spec import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, PAD_FILL

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(img, fmt="PNG", **kwargs):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def pixel(img, x, y):
    return tuple(int(v) for v in np.asarray(img)[y, x])


# ---------------------------------------------------------------- load_image

def test_rgb_png_loads_unchanged():
    arr = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    img = load_image(encode(Image.fromarray(arr)))
    assert img.mode == "RGB" and img.size == (5, 7)
    np.testing.assert_array_equal(np.asarray(img), arr)


def test_exif_orientation_is_applied():
    # 40x20, red left half / blue right half; orientation 6 = "rotate 90° clockwise to display",
    # so the displayed image is 20 wide, 40 tall, with the red half on top.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = RED
    arr[:, 20:] = BLUE
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    loaded = load_image(encode(img, "PNG", exif=exif.tobytes()))
    assert loaded.size == (20, 40)
    assert pixel(loaded, 10, 5) == RED and pixel(loaded, 10, 35) == BLUE


def test_palette_with_transparency_drops_it_or_composites_on_white():
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    assert pixel(load_image(encode(img, "PNG", transparency=0)), 0, 0) == BLACK  # as convert("RGB")
    loaded = load_image(encode(img, "PNG", transparency=0), alpha="white")
    assert pixel(loaded, 0, 0) == WHITE  # transparent index 0 (black) shows the white background
    assert pixel(loaded, 1, 0) == RED


def test_palette_without_transparency():
    img = Image.new("P", (1, 1))
    img.putpalette([10, 20, 30] + [0] * 765)
    assert pixel(load_image(encode(img, "GIF")), 0, 0) == (10, 20, 30)


def test_grayscale_and_gray_alpha():
    assert pixel(load_image(encode(Image.new("L", (1, 1), 100))), 0, 0) == (100, 100, 100)
    la = Image.new("LA", (3, 1))
    la.putpixel((0, 0), (0, 0))  # fully transparent black -> white
    la.putpixel((1, 0), (0, 255))  # opaque black
    la.putpixel((2, 0), (0, 128))  # half: 255 * (1 - 128/255) = 127
    assert [pixel(load_image(encode(la)), x, 0) for x in range(3)] == [BLACK] * 3  # alpha dropped
    loaded = load_image(encode(la), alpha="white")
    assert pixel(loaded, 0, 0) == WHITE and pixel(loaded, 1, 0) == BLACK
    assert all(abs(v - 127) <= 1 for v in pixel(loaded, 2, 0))


def test_rgba_drops_alpha_or_composites_on_white():
    img = Image.new("RGBA", (2, 1))
    img.putpixel((0, 0), (255, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 128))  # G, B: 255 * 127/255 = 127
    assert pixel(load_image(encode(img)), 0, 0) == RED  # SPEC §2: alpha dropped
    loaded = load_image(encode(img), alpha="white")
    assert pixel(loaded, 0, 0) == WHITE
    r, g, b = pixel(loaded, 1, 0)
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_16bit_grayscale_png_is_scaled_not_clipped():
    values = np.array([[0, 1000, 257 * 100, 65535]], np.uint16)  # -> 0, 4, 100, 255
    data = encode(Image.fromarray(values))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    loaded = np.asarray(load_image(data))
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 4, 100, 255])
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])


def test_32bit_integer_grayscale_holding_16bit_values():
    values = np.array([[0, 257 * 7, 65535, 70000]], np.int32)  # > 65535 clips to white
    data = encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(data))[0, :, 1], [0, 7, 255, 255])


def test_float_images_are_rejected_naming_source():
    data = encode(Image.fromarray(np.zeros((2, 2), np.float32)), "TIFF")
    with pytest.raises(BadImageError, match="scan.tif.*mode 'F'"):
        load_image(data, source="scan.tif")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_16bit_rgb_png_keeps_high_byte():
    # A 2x1 RGB PNG at 16 bits per channel, written by hand (PIL cannot write one).
    samples = [0xFFFF, 0x0000, 0x8000, 0x1234, 0x00FF, 0xFF00]
    raw = b"\x00" + struct.pack(">6H", *samples)  # filter byte 0, big-endian samples
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
    loaded = load_image(png)
    assert pixel(loaded, 0, 0) == (0xFF, 0x00, 0x80) and pixel(loaded, 1, 0) == (0x12, 0x00, 0xFF)


def test_cmyk():
    img = Image.new("CMYK", (2, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))  # no ink: white
    img.putpixel((1, 0), (255, 0, 0, 0))  # full cyan: (0, 255, 255)
    loaded = load_image(encode(img, "TIFF"))
    assert pixel(loaded, 0, 0) == WHITE and pixel(loaded, 1, 0) == (0, 255, 255)


@pytest.mark.parametrize("data", [b"", b"not an image at all", None])
def test_bad_data_raises_naming_source(data):
    if data is None:  # truncated JPEG
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        full = encode(Image.fromarray(noise), "JPEG")
        data = full[: len(full) // 2]
    with pytest.raises(BadImageError, match="coco/000123.jpg"):
        load_image(data, source="coco/000123.jpg")


# ---------------------------------------------------------------- square padding

def test_expand_to_square_portrait_odd_padding():
    img = Image.new("RGB", (31, 50), RED)  # pad 19 columns: 9 left, 10 right
    square = expand_to_square(img)
    assert square.size == (50, 50)
    row = np.asarray(square)[25]
    assert tuple(row[8]) == PAD_FILL and tuple(row[9]) == RED
    assert tuple(row[39]) == RED and tuple(row[40]) == PAD_FILL


def test_expand_to_square_landscape_and_square():
    square = expand_to_square(Image.new("RGB", (60, 20), BLUE))  # 20 rows above, 20 below
    arr = np.asarray(square)
    assert tuple(arr[19, 30]) == PAD_FILL and tuple(arr[20, 30]) == BLUE
    assert tuple(arr[39, 30]) == BLUE and tuple(arr[40, 30]) == PAD_FILL
    same = Image.new("RGB", (8, 8), RED)
    np.testing.assert_array_equal(np.asarray(expand_to_square(same)), np.asarray(same))


@pytest.mark.parametrize("size", [(37, 20), (20, 37), (16, 16)])
def test_square_padding_agrees_with_box_coordinates(size):
    # A pixel's square coordinate (coords.pixel_to_square) times the side is where it lands.
    width, height = size
    img = Image.new("RGB", size, BLACK)
    img.putpixel((width - 3, height - 2), RED)
    square = expand_to_square(img)
    x, y, _, _ = coords.pixel_to_square((width - 3, height - 2, width, height), width, height)
    side = max(width, height)
    assert pixel(square, round(x * side), round(y * side)) == RED


# ---------------------------------------------------------------- resize + normalise vs HF

def _padded_by_hand(arr):
    height, width, _ = arr.shape
    side = max(width, height)
    out = np.empty((side, side, 3), np.uint8)
    out[...] = PAD_FILL
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = arr
    return out


@pytest.mark.parametrize("size", [(500, 375), (300, 420)])
def test_preprocess_matches_hf_clip_and_imagenet_processors(size):
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(arr).resize((size[0] // 8, size[1] // 8))
                     .resize(size, Image.BILINEAR))  # smooth, like a photo
    pixels = preprocess_image(Image.fromarray(arr))
    assert pixels.shape == (336, 336, 3) and pixels.dtype == np.uint8

    # openai/clip-vit-large-patch14-336's processor: shortest edge 336, centre crop 336, bicubic
    crop = {"height": 336, "width": 336}
    clip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size=crop, resample=3,
                                 do_center_crop=True, image_mean=list(CLIP_MEAN),
                                 image_std=list(CLIP_STD))
    dino = BitImageProcessorPil(size={"shortest_edge": 336}, crop_size=crop, resample=3,
                                do_center_crop=True, image_mean=list(IMAGENET_MEAN),
                                image_std=list(IMAGENET_STD))
    for processor, mean, std in ((clip, CLIP_MEAN, CLIP_STD), (dino, IMAGENET_MEAN, IMAGENET_STD)):
        want = processor(images=_padded_by_hand(arr), return_tensors="np")["pixel_values"][0]
        got = normalize(pixels, mean, std)
        assert got.dtype == np.float32
        tol = 1.01 / 255 / np.array(std)  # one grey level
        assert np.all(np.abs(got - want.transpose(1, 2, 0)) <= tol)


def test_normalize_by_hand_and_with_jax():
    import jax.numpy as jnp

    pixels = np.array([[[0, 255, 128]]], np.uint8)
    want = (np.array([0.0, 1.0, 128 / 255]) - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(normalize(pixels, CLIP_MEAN, CLIP_STD), [[want]], rtol=1e-6)
    got = normalize(jnp.asarray(pixels), CLIP_MEAN, CLIP_STD, xp=jnp)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), [[want]], rtol=1e-6)


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        preprocess_image(Image.new("L", (4, 4)))


# ---------------------------------------------------------------- object crops

def coordinate_image(width, height):
    """R = x, G = y: a crop's corner pixels say where it came from."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = np.arange(width)[None, :]
    arr[..., 1] = np.arange(height)[:, None]
    return Image.fromarray(arr)


def test_crop_margin_by_hand():
    # box 100 wide, 40 tall: sides move out by 10 and 4 -> (40, 16, 160, 64)
    crop = crop_object(coordinate_image(200, 100), (50, 20, 150, 60), margin=0.1)
    assert crop.size == (120, 48)
    assert pixel(crop, 0, 0)[:2] == (40, 16) and pixel(crop, 119, 47)[:2] == (159, 63)


def test_crop_clips_to_image_and_rounds_outwards():
    crop = crop_object(coordinate_image(200, 100), (2, 1, 52, 99), margin=0.1)
    assert crop.size == (57, 100)  # left 2-5 -> 0, right 52+5 = 57, top/bottom +-9.8 -> full height
    assert pixel(crop, 0, 0)[:2] == (0, 0)
    crop = crop_object(coordinate_image(50, 50), (10.5, 10.5, 20.2, 20.2), margin=0.0)
    assert crop.size == (11, 11) and pixel(crop, 0, 0)[:2] == (10, 10)
    # a box sticking out of the image is clipped before the margin is measured
    crop = crop_object(coordinate_image(50, 50), (-20, 40, 10, 70), margin=0.1)
    assert crop.size == (11, 11) and pixel(crop, 0, 0)[:2] == (0, 39)


def test_crop_jitter_range_and_determinism():
    img = coordinate_image(200, 200)
    box = (50, 50, 150, 150)  # margin 0.2 +- 50% -> each side out by 10..30 pixels
    sizes = set()
    for seed in range(20):
        a = crop_object(img, box, 0.2, rng=np.random.default_rng(seed), jitter=0.5)
        b = crop_object(img, box, 0.2, rng=np.random.default_rng(seed), jitter=0.5)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        left, top = pixel(a, 0, 0)[:2]
        assert 20 <= left <= 40 and 20 <= top <= 40
        assert 120 <= a.size[0] <= 161 and 120 <= a.size[1] <= 161
        sizes.add(a.size)
    assert len(sizes) > 5
    fixed = crop_object(img, box, 0.2, rng=None, jitter=0.5)  # no rng: no jitter (evaluation)
    assert fixed.size == (140, 140)


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (10, 20, 30, 5), (60, 60, 80, 80),
                                 (-30, -30, -1, -1), (float("nan"), 0, 5, 5)])
def test_degenerate_boxes_raise(box):
    with pytest.raises(ValueError, match="box"):
        crop_object(coordinate_image(50, 50), box)
