"""Reconstructed people drawn onto their source frames, for checking a ``reconstruct`` result by eye.

The job's camera (``initial_estimate``): a pinhole with focal length f = sqrt(W^2 + H^2) and the
principal point at the image centre, camera frame x right, y down, z forward (metres), so a
camera-frame point (x, y, z) lands at pixel

    u = f x / z + W / 2,    v = f y / z + H / 2

in the ``video`` convention (pixel column x covers [x, x + 1)). W x H is the size of the frames the
job decoded (``--max-frame-size`` shrinks them with the aspect kept, which scales u, v and f alike).

A rendered frame is the decoded frame with each person's 24 SMPL joints and limbs in the person's
colour, a box around them labelled with the person, and beside it a side view of the same joints
(depth z to the right, up as up, one scale for the whole clip, the ground line at the lowest foot).
"""

from __future__ import annotations

import math

import numpy as np

from motionfleet.render import PARENTS
from motionfleet.socialmirror.initial_estimate import focal_length

PERSON_RGB = ((255, 210, 0), (0, 220, 255))  # person 0 yellow, person 1 cyan: apart from each other and skin tones
SIDE_BACKGROUND = (40, 40, 40)
GROUND_RGB = (150, 150, 150)
MIN_DEPTH = 1e-3  # metres: a joint this close or behind the camera is not drawn


def pinhole(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 3) camera-frame points -> (..., 2) pixel coordinates (u, v) of the job's camera; NaN for
    points behind the camera."""
    f = focal_length(width, height)
    z = np.where(points[..., 2] > MIN_DEPTH, points[..., 2], np.nan)
    return np.stack([f * points[..., 0] / z + width / 2, f * points[..., 1] / z + height / 2], axis=-1)


def line_width(width: int, height: int) -> int:
    return max(2, round(min(width, height) / 100))


def draw_person(draw, pixels: np.ndarray, colour: tuple[int, int, int], lw: int) -> None:
    """Limbs along SMPL's tree and a dot per joint; ``pixels`` (24, 2) continuous pixel coordinates
    (PIL addresses pixel centres, hence the half-pixel shift)."""
    at = pixels - 0.5
    for joint, parent in enumerate(PARENTS):
        if parent >= 0 and np.isfinite(at[[joint, parent]]).all():
            draw.line([tuple(at[parent]), tuple(at[joint])], fill=colour, width=lw)
    for x, y in at[np.isfinite(at).all(axis=1)]:
        draw.ellipse([x - lw, y - lw, x + lw, y + lw], fill=colour)


def draw_label_box(draw, pixels: np.ndarray, colour: tuple[int, int, int], label: str, lw: int) -> None:
    """A box around the drawn joints, its label just inside its top-left corner."""
    seen = pixels[np.isfinite(pixels).all(axis=1)]
    if len(seen) == 0:
        return
    pad = 3 * lw
    (x0, y0), (x1, y1) = seen.min(0) - pad, seen.max(0) + pad
    draw.rectangle([x0, y0, x1, y1], outline=colour, width=max(1, lw // 2))
    draw.text((x0 + lw, y0 + lw), label, fill=colour)


def overlay(rgb: np.ndarray, people: np.ndarray) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 frame and ``people`` (2, 24, 3) camera-frame joints -> the frame with
    both people drawn on it."""
    from PIL import Image, ImageDraw

    height, width = rgb.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(image)
    lw = line_width(width, height)
    for person, (joints, colour) in enumerate(zip(people, PERSON_RGB)):
        pixels = pinhole(joints, width, height)
        draw_label_box(draw, pixels, colour, f"person {person}", lw)
        draw_person(draw, pixels, colour, lw)
    return np.asarray(image)


class SideView:
    """The joints seen from the camera's right: depth z to the right, up (-y) as up, one scale and
    one ground line (the lowest joint of the clip) for every frame, so the people do not jump."""

    def __init__(self, clip: np.ndarray, size: tuple[int, int]):
        """``clip`` (..., 3) every camera-frame joint of the clip; ``size`` (width, height) of the panel."""
        points = clip.reshape(-1, 3)
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) == 0:
            points = np.zeros((1, 3))
        self.size = size
        low, high = points.min(0), points.max(0)
        self.centre = (low + high) / 2
        # pixels per metre: the clip fills 80% of the panel, a range under a metre counts as one
        self.scale = 0.8 * min(size[0] / max(float(high[2] - low[2]), 1.0), size[1] / max(float(high[1] - low[1]), 1.0))
        self.ground = float(high[1])  # y is down: the lowest joint has the largest y

    def pixels(self, points: np.ndarray) -> np.ndarray:
        width, height = self.size
        return np.stack([(points[..., 2] - self.centre[2]) * self.scale + width / 2,
                         (points[..., 1] - self.centre[1]) * self.scale + height / 2], axis=-1)

    def draw(self, people: np.ndarray) -> np.ndarray:
        """(2, 24, 3) joints of one frame -> (height, width, 3) uint8 panel."""
        from PIL import Image, ImageDraw

        width, height = self.size
        image = Image.new("RGB", self.size, SIDE_BACKGROUND)
        draw = ImageDraw.Draw(image)
        lw = line_width(width, height)
        ground = float(self.pixels(np.array([0.0, self.ground, self.centre[2]]))[1]) + lw
        draw.line([(0, ground), (width, ground)], fill=GROUND_RGB, width=max(1, lw // 2))
        draw.text((lw, lw), "side view (depth ->)", fill=GROUND_RGB)
        for joints, colour in zip(people, PERSON_RGB):
            draw_person(draw, self.pixels(joints), colour, lw)
        return np.asarray(image)


def side_by_side(rgb: np.ndarray, people: np.ndarray, side: SideView) -> np.ndarray:
    """The frame with the people drawn on it and the side view to its right."""
    return np.concatenate([overlay(rgb, people), side.draw(people)], axis=1)


def side_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the side view beside a (width, height) frame: as high, 3/4 as wide (even)."""
    height = frame_size[1]
    return max(2, math.ceil(0.75 * height / 2) * 2), height


TILE_WIDTH = 320


def shrink(rgb: np.ndarray, width: int = TILE_WIDTH) -> np.ndarray:
    """``rgb`` scaled to ``width`` pixels wide (aspect kept): a contact sheet holds its tiles, not the frames."""
    from PIL import Image

    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.Resampling.BILINEAR))


def contact_sheet(tiles: list[tuple[str, np.ndarray]], tile_width: int = TILE_WIDTH, columns: int = 6) -> np.ndarray:
    """One image of (label, RGB image) tiles in a grid, ``columns`` per row, each scaled to
    ``tile_width`` with its label under it."""
    from PIL import Image, ImageDraw

    label_h = 14
    scaled = [(label, rgb if rgb.shape[1] == tile_width else shrink(rgb, tile_width)) for label, rgb in tiles]
    tile_h = max((rgb.shape[0] for _, rgb in scaled), default=1) + label_h
    columns = max(1, min(columns, len(scaled)))
    rows = max(1, math.ceil(len(scaled) / columns))
    sheet = Image.new("RGB", (columns * tile_width, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (label, rgb) in enumerate(scaled):
        x, y = (n % columns) * tile_width, (n // columns) * tile_h
        sheet.paste(Image.fromarray(np.ascontiguousarray(rgb)), (x, y))
        draw.text((x + 2, y + rgb.shape[0] + 1), label[:48], fill=(0, 0, 0))
    return np.asarray(sheet)
