import io

import pytest
from PIL import Image

from clara_ray.ingest.images import (DEFAULT_MAX_PIXELS, ImageError, ImageTooLarge, bound_decoding, guard_image_opens,
                                    normalise_image, sniff_image, take_refusals)


def _png(size=(300, 200), mode="RGB", colour="red") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_becomes_jpeg_of_same_size():
    out = normalise_image(_png())
    image = Image.open(io.BytesIO(out.jpeg))
    assert image.format == "JPEG" and image.size == (300, 200) == (out.width, out.height)


def test_large_image_is_downscaled_keeping_aspect():
    out = normalise_image(_png((5000, 1000)), max_side=2048)
    assert (out.width, out.height) == (2048, 410)


def test_transparency_is_flattened_on_white():
    out = normalise_image(_png(mode="RGBA", colour=(0, 0, 0, 0)))
    assert Image.open(io.BytesIO(out.jpeg)).getpixel((5, 5))[0] > 240


def test_truncated_and_garbage_and_tiny_images_are_rejected():
    data = _png()
    with pytest.raises(ImageError, match="truncated"):
        normalise_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not a readable image"):
        normalise_image(b"definitely not pixels")
    with pytest.raises(ImageError, match="too small"):
        normalise_image(_png((4, 4)))


def test_sniff_goes_by_content():
    assert sniff_image(_png())
    assert not sniff_image(b"PK\x03\x04 a zip, not an image")


def _encoded(size, format, **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "green").save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["JPEG", "JPEG2000"])
def test_over_the_limit_jpeg_decodes_at_a_reduced_size(format):
    image = Image.open(io.BytesIO(_encoded((4000, 3000), format)))
    bound_decoding(image, max_side=256, max_pixels=1_000_000)
    # The largest reduction (1/8) that still leaves 256 px on the long side; the bitmap never exists at full size.
    assert image.size == (500, 375)
    out = normalise_image(_encoded((4000, 3000), format), max_side=256, max_pixels=1_000_000)
    assert (out.width, out.height) == (256, 192)


def test_reduction_goes_below_max_side_rather_than_refuse():
    image = Image.open(io.BytesIO(_encoded((4000, 3000), "JPEG")))
    bound_decoding(image, max_side=2048, max_pixels=1_000_000)
    assert image.size == (1000, 750)  # no reduction keeps 2048 px; 1/4 is the least within the limit


def test_images_within_the_limit_are_left_alone():
    image = Image.open(io.BytesIO(_encoded((4000, 3000), "JPEG")))
    bound_decoding(image, max_side=256, max_pixels=12_000_000)
    assert image.size == (4000, 3000)


def test_over_the_limit_png_is_refused_with_its_size():
    over = r"4000x3000 px \(12,000,000 pixels\) is over the limit of 1,000,000"
    with pytest.raises(ImageTooLarge, match=over) as info:
        normalise_image(_png((4000, 3000)), max_pixels=1_000_000)
    assert info.value.kind == "image_too_large"


def test_guard_bounds_every_open_of_the_process():
    """docling opens embedded pictures with Image.open itself; the guard reaches those opens."""
    try:
        guard_image_opens(max_side=256, max_pixels=1_000_000)
        take_refusals()
        assert Image.open(io.BytesIO(_encoded((4000, 3000), "JPEG"))).size == (500, 375)
        with pytest.raises(ValueError, match="4000x3000"):  # a ValueError: docling leaves the picture out
            Image.open(io.BytesIO(_png((4000, 3000))))
        assert [reason.split(" px")[0] for reason in take_refusals()] == ["image of 4000x3000"]
        assert sniff_image(_png((4000, 3000)))  # still an image, only too large
    finally:
        guard_image_opens(max_side=2048, max_pixels=DEFAULT_MAX_PIXELS)
        take_refusals()
