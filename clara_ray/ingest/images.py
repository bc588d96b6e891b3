"""Image validation and normalisation: Pillow-decoded, RGB JPEG, longest side capped.

Decoding is bounded: no image is decoded at more than `max_pixels` pixels (Pillow's
decompression-bomb limit by default). An image over it is decoded directly at a reduced size
where its format allows (JPEG: DCT scaling via `Image.draft`; JPEG 2000: resolution levels via
`reduce`) and refused with ImageTooLarge otherwise. `guard_image_opens` puts the same bound on
every `Image.open` of the process, which is where docling decodes the pictures inside DOCX,
PPTX, HTML, Markdown and PDF files.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default limit (~270 MB once decoded to RGB)
# Reduced sizes a format decodes to directly, as divisors of each side. JPEG 2000 files usually
# have five resolution levels; three are assumed.
_REDUCED_SCALES = {"JPEG": (1, 2, 4, 8), "MPO": (1, 2, 4, 8), "JPEG2000": (1, 2, 4, 8)}


class ImageError(ValueError):
    """An image that cannot be used (corrupt, truncated, too small)."""
    kind = "corrupt_image"


class ImageTooLarge(ImageError):
    """More pixels than may be decoded, even at the smallest size the format decodes to."""
    kind = "image_too_large"


@dataclass(frozen=True)
class NormalisedImage:
    jpeg: bytes
    width: int
    height: int


def _reduced(size: tuple[int, int], scale: int) -> tuple[int, int]:
    return -(-size[0] // scale), -(-size[1] // scale)


def _pick_scale(size: tuple[int, int], scales: tuple[int, ...], max_side: int, max_pixels: int) -> int:
    """The largest scale that still leaves `max_side` pixels to downscale from, larger while over
    `max_pixels` (the picture gets smaller than `max_side` rather than being refused)."""
    keep = max([s for s in scales if max(_reduced(size, s)) >= max_side], default=1)
    fits = [s for s in scales if s >= keep and _reduced(size, s)[0] * _reduced(size, s)[1] <= max_pixels]
    return min(fits, default=scales[-1])


def bound_decoding(image: Image.Image, max_side: int, max_pixels: int) -> None:
    """Make a just-opened image over `max_pixels` decode at a reduced size, or raise ImageTooLarge.

    Images within the limit are left alone. Works on the header only: nothing is decoded, except
    a reduced JPEG 2000, whose size changes only when it loads.
    """
    width, height = image.size
    if width * height <= max_pixels:
        return
    scales = _REDUCED_SCALES.get(image.format or "", (1,))
    scale = _pick_scale(image.size, scales, max_side, max_pixels)
    if scale > 1 and image.format == "JPEG2000":
        image.reduce = scale.bit_length() - 1  # type: ignore[assignment]  # the plugin's resolution level
        image.load()
    elif scale > 1:
        image.draft(None, (max(1, width // scale), max(1, height // scale)))  # draft then picks `scale`
    if image.width * image.height > max_pixels:
        smallest = f", {image.width}x{image.height} at the smallest size {image.format} decodes to" if scale > 1 else ""
        raise ImageTooLarge(f"image of {width}x{height} px ({width * height:,} pixels{smallest}) is over the limit "
                            f"of {max_pixels:,} pixels (extract.max_image_pixels)")


def normalise_image(image: Image.Image | bytes, max_side: int = 2048, min_side: int = 8,
                    quality: int = 90, max_pixels: int = DEFAULT_MAX_PIXELS) -> NormalisedImage:
    """Decode fully (catches truncation), drop alpha on white, downscale, encode as JPEG."""
    try:
        if isinstance(image, bytes):
            image = Image.open(io.BytesIO(image))
            bound_decoding(image, max_side, max_pixels)
        image.load()  # Image.open is lazy: corrupt pixel data only shows up here
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check, where no guard is installed
        raise ImageTooLarge(str(exc)) from None
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
    except (ImageTooLarge, Image.DecompressionBombError):
        return True  # an image all right, just too large to open
    except (UnidentifiedImageError, OSError, ValueError):
        return False


# --- the process-wide guard ------------------------------------------------------------------
_limits = {"max_side": 2048, "max_pixels": DEFAULT_MAX_PIXELS}
_refusals: list[str] = []


def _bounded(factory):
    def open_bounded(fp, filename):
        image = factory(fp, filename)
        try:
            bound_decoding(image, **_limits)
        except ImageTooLarge as exc:
            _refusals.append(str(exc))
            raise
        return image

    open_bounded.bounded = True
    return open_bounded


def guard_image_opens(max_side: int, max_pixels: int) -> None:
    """Bound every later `Image.open` of this process as `bound_decoding` does (idempotent).

    Needed because docling opens embedded pictures itself: without it, a JPEG scan over Pillow's
    limit fails the whole document instead of being decoded at a reduced size. A refused image
    raises ImageTooLarge (a ValueError, which docling treats as a broken picture: it keeps the
    document and leaves the picture out); `take_refusals` tells which.
    """
    Image.init()  # load every format plugin now, so that all of them are wrapped
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check agrees with ours
    _limits.update(max_side=max_side, max_pixels=max_pixels)
    for name, (factory, accept) in list(Image.OPEN.items()):
        if not getattr(factory, "bounded", False):
            Image.register_open(name, _bounded(factory), accept)


def take_refusals() -> list[str]:
    """The reasons of the opens refused since the last call, oldest first."""
    taken = list(_refusals)
    del _refusals[: len(taken)]
    return taken
