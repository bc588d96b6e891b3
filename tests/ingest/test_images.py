import io

import pytest
from PIL import Image

from clara_ray.ingest.images import ImageError, normalise_image, sniff_image


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
