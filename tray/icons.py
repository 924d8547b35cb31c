"""Pillow drawings of the tray icon: a coloured disc per state, a white glyph, an optional count badge.

Drawn at 4x and downsampled so the shapes stay smooth at the 16–32 px trays actually use; no image files to
ship or to go missing.
"""

from __future__ import annotations

import math
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from cxsync.tray.model import IconLook

SIZE = 64
_SCALE = 4
_WHITE = (255, 255, 255, 255)
_BADGE = (183, 28, 28, 255)  # dark red, readable on every state colour


def _rgb(colour: str) -> tuple[int, int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255


def _glyph(d: ImageDraw.ImageDraw, glyph: str, s: float, fill: tuple[int, int, int, int]) -> None:
    """Draw ``glyph`` centred in an ``s``×``s`` square.  Coordinates are fractions of ``s``."""

    def p(x: float, y: float) -> tuple[float, float]:
        return (x * s, y * s)

    w = max(1, round(s * 0.09))  # stroke width
    if glyph == "check":
        d.line([p(0.28, 0.52), p(0.44, 0.68), p(0.73, 0.34)], fill=fill, width=w, joint="curve")
    elif glyph == "cross":
        d.line([p(0.32, 0.32), p(0.68, 0.68)], fill=fill, width=w)
        d.line([p(0.68, 0.32), p(0.32, 0.68)], fill=fill, width=w)
    elif glyph == "pause":
        d.rectangle([p(0.34, 0.29), p(0.45, 0.71)], fill=fill)
        d.rectangle([p(0.55, 0.29), p(0.66, 0.71)], fill=fill)
    elif glyph == "stop":
        d.rounded_rectangle([p(0.33, 0.33), p(0.67, 0.67)], radius=s * 0.04, fill=fill)
    elif glyph == "arrows":
        # two half-circle arrows chasing each other: the universal "sync"
        box = [p(0.28, 0.28), p(0.72, 0.72)]
        d.arc(box, 200, 340, fill=fill, width=w)
        d.arc(box, 20, 160, fill=fill, width=w)
        r = 0.22
        for end_deg in (340, 160):
            a = math.radians(end_deg)
            cx, cy = 0.5 + r * math.cos(a), 0.5 + r * math.sin(a)
            tx, ty = -math.sin(a), math.cos(a)  # tangent, direction of travel
            nx, ny = math.cos(a), math.sin(a)
            h = 0.1
            d.polygon([p(cx + tx * h, cy + ty * h), p(cx + nx * h * 0.9, cy + ny * h * 0.9),
                       p(cx - nx * h * 0.9, cy - ny * h * 0.9)], fill=fill)
    elif glyph == "cloud-off":
        d.ellipse([p(0.24, 0.44), p(0.46, 0.66)], fill=fill)
        d.ellipse([p(0.36, 0.32), p(0.64, 0.60)], fill=fill)
        d.ellipse([p(0.54, 0.42), p(0.78, 0.66)], fill=fill)
        d.rectangle([p(0.35, 0.52), p(0.67, 0.66)], fill=fill)
        # the strike-through: erase a gap (the glyph has its own layer, so the disc shows through), then a line
        d.line([p(0.25, 0.25), p(0.77, 0.77)], fill=(0, 0, 0, 0), width=w * 2)
        d.line([p(0.25, 0.25), p(0.77, 0.77)], fill=fill, width=max(1, w // 2))
    elif glyph == "key":
        d.ellipse([p(0.25, 0.30), p(0.47, 0.52)], outline=fill, width=w)
        d.line([p(0.44, 0.47), p(0.72, 0.72)], fill=fill, width=w)
        d.line([p(0.62, 0.63), p(0.55, 0.70)], fill=fill, width=w)
        d.line([p(0.69, 0.69), p(0.63, 0.76)], fill=fill, width=w)
    else:
        raise ValueError(f"unknown glyph {glyph!r}")


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def render(look: IconLook, size: int = SIZE) -> Image.Image:
    """The RGBA icon for ``look``, ``size`` pixels square."""
    big = size * _SCALE
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = _rgb(look.colour)
    pad = big * 0.04
    d.ellipse([pad, pad, big - pad, big - pad], fill=colour)
    glyph_layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    _glyph(ImageDraw.Draw(glyph_layer), look.glyph, big, _WHITE)
    img.alpha_composite(glyph_layer)
    if look.badge:
        _badge(img, look.badge)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _badge(img: Image.Image, text: str) -> None:
    big = img.width
    d = ImageDraw.Draw(img)
    font = _font(round(big * (0.34 if len(text) <= 2 else 0.27)))
    left, top, right, bottom = d.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    h = big * 0.46
    w = max(h, tw + big * 0.16)
    x1, y1 = big - 1, big - 1
    x0, y0 = x1 - w, y1 - h
    d.rounded_rectangle([x0, y0, x1, y1], radius=h / 2, fill=_BADGE, outline=_WHITE, width=max(1, big // 40))
    d.text((x0 + (w - tw) / 2 - left, y0 + (h - th) / 2 - top), text, font=font, fill=_WHITE)


def fit(icon: Image.Image, width: int, height: int) -> Image.Image:
    """``icon`` scaled to fit a ``width``×``height`` tray slot, aspect ratio kept, centred on its own corner colour
    (a tray that hands out a 40×26 slot gets a round disc, not an ellipse)."""
    side = max(1, min(width, height))
    rgb = icon.convert("RGB")
    out = Image.new("RGB", (max(1, width), max(1, height)), rgb.getpixel((0, 0)))
    out.paste(rgb.resize((side, side), Image.Resampling.LANCZOS), ((width - side) // 2, (height - side) // 2))
    return out
