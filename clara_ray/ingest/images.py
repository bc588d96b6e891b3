"""Image validation and normalisation: Pillow-decoded, RGB JPEG, longest side capped."""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """An image that cannot be used (corrupt, truncated, too small)."""


@dataclass(frozen=True)
class NormalisedImage:
    jpeg: bytes
    width: int
    height: int


def normalise_image(image: Image.Image | bytes, max_side: int = 2048, min_side: int = 8,
                    quality: int = 90) -> NormalisedImage:
    """Decode fully (catches truncation), drop alpha on white, downscale, encode as JPEG."""
    try:
        if isinstance(image, bytes):
            image = Image.open(io.BytesIO(image))
        image.load()  # Image.open is lazy: corrupt pixel data only shows up here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"not a readable image: {exc}") from None
    if min(image.size) < min_side:
        raise ImageError(f"image too small ({image.width}x{image.height} px, minimum side {min_side})")
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return NormalisedImage(buffer.getvalue(), image.width, image.height)


def sniff_image(data: bytes) -> bool:
    """Whether the bytes claim to be an image (by content, not by file name)."""
    try:
        Image.open(io.BytesIO(data))
        return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False
