"""tray.icons: one distinct, correctly coloured drawing per state; the badge is visible."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from cxsync.tray import icons, model
from cxsync.tray.model import STATES, IconLook


def look(state: str, badge: str | None = None) -> IconLook:
    base = model.view({"state": state}).icon
    return IconLook(base.state, base.colour, base.glyph, badge)


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def near(a: tuple[int, ...], b: tuple[int, ...], tol: int = 24) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize("state", STATES)
def test_icon_is_a_square_rgba_disc_in_the_state_colour_with_a_white_glyph(state: str) -> None:
    lk = look(state)
    img = icons.render(lk)
    assert img.mode == "RGBA" and img.size == (icons.SIZE, icons.SIZE)
    assert img.getpixel((0, 0))[3] == 0, "corners are transparent"
    # a point inside the disc but off the glyph (left edge, vertically centred) has the state colour
    assert near(img.getpixel((7, 32))[:3], rgb(lk.colour))
    raw = img.tobytes()
    pixels = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    white = sum(1 for p in pixels if p[3] > 200 and min(p[:3]) > 230)
    assert white > 40, "the glyph is drawn in white"


def test_every_state_looks_different() -> None:
    images = [icons.render(look(s)).tobytes() for s in STATES]
    assert len(set(images)) == len(STATES)


def test_badge_changes_the_bottom_right_corner_only() -> None:
    plain, badged = icons.render(look("offline")), icons.render(look("offline", "7"))
    diff = ImageChops.difference(plain, badged).getbbox()
    assert diff is not None
    left, top, _, _ = diff
    assert left >= icons.SIZE * 0.4 and top >= icons.SIZE * 0.4
    assert icons.render(look("offline", "99+")).tobytes() != badged.tobytes()


@pytest.mark.parametrize("size", [16, 22, 24, 32, 128])
def test_renders_at_tray_sizes(size: int) -> None:
    img = icons.render(look("syncing", "12"), size)
    assert img.size == (size, size)
    assert isinstance(img, Image.Image)


def test_unknown_glyph_is_rejected() -> None:
    with pytest.raises(ValueError):
        icons.render(IconLook("idle", "#000000", "smiley"))
