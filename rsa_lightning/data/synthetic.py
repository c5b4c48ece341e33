"""The embedded default dataset: deterministic, generated videos whose classes are defined by motion alone.

Why a frame-wise network cannot solve it
----------------------------------------
A frame-wise model (TSN: a 2D CNN classifies every frame on its own, the logits are averaged over time) only ever
sees the *bag* of frames of a clip. Two constructions take the class out of it:

* **Time-reversal pairs.** Every class has a partner that is its exact time reversal: ``right_to_left`` is
  ``left_to_right`` played backwards, and likewise ``down``/``up``, ``away``/``closer``,
  ``counterclockwise``/``clockwise`` and ``diverge``/``converge``. A reverse clip is rendered from the plan of its
  forward partner with the frame order reversed, so the two classes have the *same distribution of bags of frames*;
  only the order of the frames tells them apart.
* **One distribution of a frame for every class.** Every clip shows two objects of one kind (shape, texture,
  colours) on a static, cluttered background: the *actor*, which performs the motion, and a smaller *partner*, which
  stands still except in ``converge``/``diverge``, where the two move towards (away from) each other. Every frame is
  one fixed function ``f(theta, u)`` of

  - a *scene* ``theta``: background, appearance, the actor's middle size ``s``, size ratio ``R``, angle ``a`` and
    turn ``Theta``, the partner's size and angle, the travel ``L`` of a translation and ``Lc`` of a convergence, the
    middle ``C`` of the actor's travel, the partner's centre ``B`` and the converging direction ``e`` (``C`` to
    ``B``);
  - five *phases* ``u = (u_x, u_y, u_s, u_a, u_c)``, each on the grid ``k / (T - 1) - 1/2`` (``k = 0 .. T-1``): the
    actor's centre is ``C + L (u_x, u_y) + Lc u_c e``, its size ``s R ** u_s``, its angle ``a + Theta u_a``; the
    partner's centre is ``B - Lc u_c e``.

  A forward class sweeps one phase over the grid in frame order (``left_to_right``: ``u_x``; ``up``: ``u_y``,
  decreasing; ``closer``: ``u_s``; ``clockwise``: ``u_a``; ``converge``: ``u_c``) and holds each of the other four
  at a value drawn uniformly from the grid. So at a uniformly chosen frame every phase is uniform on the grid and
  independent of ``theta`` and of the other phases, *in every class*, and the frame ``f(theta, u)`` has one
  distribution whatever the class: object sizes, positions, orientations, the distance and arrangement of the two
  objects, brightness, colour and texture statistics, anything a frame-wise CNN could measure. ``theta`` never
  depends on the class either: it is redrawn only when it fails a condition that must hold for *all* phases (both
  objects inside the frame at their largest; converging objects keep their order along ``e`` and close in by at
  least half their travel wherever the actor stands in its travel square), never on the clip at hand.
  ``tests/test_synthetic.py`` checks this statistically (one frame per clip, each class against the others).

  The price is that the two objects may overlap. A condition "never overlap, for all phases" would keep the partner
  off the actor's whole travel square, and leaves no room in a 64 px frame at these sizes and motions; a condition
  on the clip at hand would make the arrangement depend on the class (version 3 kept the static object off a
  translated object's path, so the objects stood one above the other in 75 % of ``left_to_right`` frames and 3 %
  of ``up`` frames: a frame-wise network could tell the pairs apart). Instead the partner is placed beyond the
  actor's travel square along ``e``; with version 7's large objects their bounding discs overlap in about 19 % of
  frames, the shapes themselves in about 7 % (the partner more than half hidden in about 2 %), and the actor is
  drawn in front.

What remains for a frame-wise model is the bag of frames as a whole: it shows *which* quantity varies within a
clip (hence the pair), never in which direction, so even a model that learnt that would stay at or below 50 % for
ten classes; one that reads single frames is at chance (10 %).

Format versions: 1 had small objects and motions (object size 0.095-0.125 of the frame, travel 0.28-0.38, turn
0.5-0.9 pi), with which no TSN-style ResNet (RSA or 3D-conv mixers) left the chance plateau within a CPU budget of
minutes; 2 had larger objects and motions (size 0.12-0.15, travel 0.40-0.48, turn 0.9-1.3 pi); 3 turned faster
(1.2-1.6 pi) but kept per-frame hints at the class pair (arrangement, smaller objects in ``converge`` clips): a
frame-wise ``tsn_tiny`` reached 23-27 %. Version 4 draws every frame from one distribution as above, with version
3's travel (0.42-0.48) and turn (1.2-1.6 pi), an actor of size 0.12-0.14 and a partner of 0.07-0.09 (sizes vary
by R ** u, R 1.65-1.85), each converging object moving 0.12-0.16, and markers about twice as large; a first draft with a
shorter travel (0.32-0.38, version 1's) left ``rsa_tiny`` at chance for 7 epochs, the final one for 8 (16-frame
clips, of which training samples 8). Version 5 made the motion per sampled frame larger and rotation unambiguous:
8-frame clips (``num_frames``; training samples every frame, so an object moves twice as far between the frames the
network sees: a translation about 4 px, 1 px on the 14 x 14 feature maps), no square or cross (they look alike after
a quarter turn, so a turn of more than 45 degrees per frame would look like a smaller turn the other way; the other
shapes never look alike after less than half a turn), a turn of 1.6-2.0 pi (41-51 degrees per frame). On 8-frame
version-4 clips ``rsa_tiny`` left the chance plateau after 4 epochs and on version 5 after 2, but in both it told
the two turning directions apart no better than chance (89 % and 88 % at epoch 12, every other class nearly always
right). Version 6 turned by 2.4-2.8 pi (62-72 degrees per frame) and put the markers 0.6-0.65 of the
object's size off its centre (about 5 px, 1.25 px of the 14 x 14 feature map); the turning pair stayed at chance
(88 % in all). Trained on the two turning classes alone (170 clips each, 25-30 epochs), ``rsa_tiny`` memorised them
and stayed near chance (at most 67 % val) with version 6's objects at 26-31 or 62-72 degrees per frame, with 2 heads
instead of 8, with 5x the clips, and with 1.5x larger objects; it told them apart (88 %) only with twice as large
objects turning by 26-31 degrees per frame, whose marker circles 2.5 feature pixels around the centre.
Version 7 (the default) therefore has large objects (the actor's size 0.24-0.26, R 1.3-1.4) turning by 1.0-1.2 pi
(26-31 degrees per frame), and, to keep them inside the frame, a shorter travel (0.28-0.32: 2.6-2.9 px per frame,
0.7 of a feature pixel) and convergence (0.10-0.12). Measured results are in the README.

Conventions
-----------
Image coordinates: ``x`` to the right, ``y`` *down*, in output pixels, the frame spanning ``[0, size]``. An
orientation ``theta`` turns the object's local ``+u`` axis towards ``(cos theta, sin theta)``, so on screen an
*increasing* ``theta`` is a **clockwise** turn. ``up`` means decreasing ``y``. ``closer`` means a growing object.
A horizontal flip turns ``left_to_right`` into ``right_to_left`` *and* ``clockwise`` into ``counterclockwise``.

Every shape fits in its unit disc (so an object of size ``s`` lies within radius ``s`` of its centre) and carries
a contrasting marker off its centre that breaks rotational symmetry. Textures live in object coordinates: they
move, turn and scale with the object. Frames are rendered at 2x resolution and averaged down (anti-aliasing).
Array maths uses only arithmetic, comparisons, floor and square roots (trigonometry only on Python scalars), so
renders are bit-identical for the same seed.

Files written by :func:`generate_synthetic_dataset`::

    root/videos/train_00000.mp4 ...      H.264 (libx264, yuv420p, closed GOP, no B-frames), ``fps`` frames/s
    root/annotations/train.txt, val.txt  ``videos/<id>.mp4 <label>`` per line
    root/annotations/classes.txt         class name of label i on line i
    root/manifest.json                   parameters, counts, format version; written last (marks completion)
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import av
import numpy as np

from rsa_lightning.errors import DataError
from rsa_lightning.utils.processes import worker_context

log = logging.getLogger(__name__)

MOTIONS: dict[str, str] = {
    "left_to_right": "Moving something from left to right",
    "right_to_left": "Moving something from right to left",
    "up": "Moving something up",
    "down": "Moving something down",
    "closer": "Moving something closer to the camera",
    "away": "Moving something away from the camera",
    "clockwise": "Turning something clockwise",
    "counterclockwise": "Turning something counterclockwise",
    "converge": "Moving something and something closer to each other",
    "diverge": "Moving something and something away from each other",
}
"""Class key -> class name (Something-Something style template), in label order of the full dataset."""

TIME_REVERSED: dict[str, str] = {
    "right_to_left": "left_to_right",
    "down": "up",
    "away": "closer",
    "counterclockwise": "clockwise",
    "diverge": "converge",
}
"""Reverse class -> forward class it is rendered from (frame order reversed)."""

SHAPES = ("triangle", "ell", "notched_ellipse", "tee")  # none looks alike after less than half a turn
TEXTURES = ("solid", "stripes", "checker", "noise")

FORMAT_VERSION = 7  # history in the module docstring; a dataset of another version is regenerated
SPLITS = ("train", "val")
_SUPERSAMPLE = 2
_CRF = 16

# Geometry, as fractions of the frame size (a size is the radius of the object's bounding disc).
_SIZE_MID = (0.24, 0.26)  # s: the actor's size in the middle of its range (large: see the marker below)
_PARTNER_SIZE = (0.07, 0.09)  # the partner's s (smaller: it leaves room for the actor's travel)
_SIZE_RATIO = (1.3, 1.4)  # R: largest / smallest size of a `closer` clip
_TRAVEL = (0.28, 0.32)  # L: distance a translated object moves over the clip
_CONVERGE_TRAVEL = (0.10, 0.12)  # distance each `converge` object moves towards the other
_TURN = (1.0 * math.pi, 1.2 * math.pi)  # Theta: total rotation of a `clockwise` clip, radians
_BORDER = 1.0  # pixels between an object's bounding disc and the frame border
_CLOSEST = 0.25  # the centres stay this many mid sizes apart along the converging axis, for all phases
_CONVERGE_VISIBLE = 0.5  # least fall of the converging objects' distance, relative to 2 x their travel
_SCENE_BATCH = 128  # candidate scenes drawn at once
_MAX_TRIES = 1000


@dataclasses.dataclass(frozen=True)
class Appearance:
    """How the objects of a clip look (both objects share it: they are of the same kind).

    ``colors`` holds three RGB rows in [0, 1]: main colour, second texture colour, marker colour.
    ``texture_period`` and ``texture_angle`` set stripes/checker in object units; ``noise`` is a small grid of
    values in [0, 1] sampled bilinearly over the object's unit square for the ``noise`` texture.
    """

    shape: str
    texture: str
    colors: np.ndarray
    texture_period: float
    texture_angle: float
    noise: np.ndarray


@dataclasses.dataclass(frozen=True)
class ObjectTrack:
    """Per-frame state of one object, each a float array of shape ``(T,)``: centre ``x``/``y`` and ``size`` in
    output pixels, ``angle`` in radians (increasing = clockwise on screen). ``moving`` tells whether the class motion
    applies to it (False for a static distractor)."""

    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    moving: bool


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip: the static background at supersampled resolution
    ``(size * ss, size * ss, 3)`` (float32 in [0, 1]), the objects' appearance and their tracks."""

    motion: str
    size: int
    num_frames: int
    background: np.ndarray
    appearance: Appearance
    objects: tuple[ObjectTrack, ...]


# --------------------------------------------------------------------------------------------------- shapes


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in object coordinates (unit disc); ``+u`` is the object's 'front', ``+v`` its 'down'."""
    au, av_ = np.abs(u), np.abs(v)
    if shape == "triangle":  # isosceles, apex at +u
        return (u >= -0.62) & (0.47 * u + av_ <= 0.47)  # sides from (1, 0) to (-0.62, +-0.76)
    if shape == "ell":
        return ((u >= -0.65) & (u <= -0.2) & (av_ <= 0.7)) | ((au <= 0.65) & (v >= 0.25) & (v <= 0.7))
    if shape == "notched_ellipse":
        ellipse = u * u / (0.95 * 0.95) + v * v / (0.6 * 0.6) <= 1.0
        notch = (u - 0.95) ** 2 + v * v <= 0.35 * 0.35
        return ellipse & ~notch
    if shape == "tee":
        return ((au <= 0.7) & (v >= -0.7) & (v <= -0.35)) | ((au <= 0.18) & (v >= -0.35) & (v <= 0.8))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# (u, v, radius) of the contrasting marker: 0.6-0.65 of the size off the centre, about 7 px across for a mid-size
# object, so that it circles about 10 px (2.5 px of the 14 x 14 feature maps of a 56 x 56 crop) around the centre
# and a turn moves it by about 5 px per frame; clipped to the shape.
_MARKERS: dict[str, tuple[float, float, float]] = {
    "triangle": (-0.4, 0.45, 0.22),
    "ell": (-0.42, -0.5, 0.22),
    "notched_ellipse": (-0.62, 0.0, 0.28),
    "tee": (0.0, 0.62, 0.2),
}


def _texture(app: Appearance, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Object colour at object coordinates ``(u, v)``; returns ``(..., 3)`` float32."""
    c1, c2 = app.colors[0], app.colors[1]
    if app.texture == "solid":
        weight = np.zeros_like(u)
    elif app.texture in ("stripes", "checker"):
        cos, sin = math.cos(app.texture_angle), math.sin(app.texture_angle)
        a = np.floor((cos * u + sin * v) / app.texture_period)
        if app.texture == "stripes":
            weight = a - 2.0 * np.floor(a / 2.0)
        else:
            b = np.floor((-sin * u + cos * v) / app.texture_period)
            weight = (a + b) - 2.0 * np.floor((a + b) / 2.0)
    elif app.texture == "noise":
        weight = _bilinear(app.noise, (u + 1.0) * 0.5, (v + 1.0) * 0.5)
    else:
        raise ValueError(f"unknown texture {app.texture!r}; expected one of {TEXTURES}")
    weight = weight.astype(np.float32)[..., None]
    return c1 + (c2 - c1) * weight


def _bilinear(grid: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Sample ``grid`` (gh, gw[, C]) at fractional positions ``fx, fy`` in [0, 1] (clamped), bilinearly."""
    gh, gw = grid.shape[:2]
    px = np.clip(fx, 0.0, 1.0) * (gw - 1)
    py = np.clip(fy, 0.0, 1.0) * (gh - 1)
    x0 = np.minimum(np.floor(px).astype(np.int64), gw - 2)
    y0 = np.minimum(np.floor(py).astype(np.int64), gh - 2)
    wx, wy = px - x0, py - y0
    if grid.ndim == 3:
        wx, wy = wx[..., None], wy[..., None]
    top = grid[y0, x0] * (1 - wx) + grid[y0, x0 + 1] * wx
    bottom = grid[y0 + 1, x0] * (1 - wx) + grid[y0 + 1, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


# --------------------------------------------------------------------------------------------------- planning


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _random_color(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    hue = float(rng.uniform())
    return np.array(colorsys.hsv_to_rgb(hue, _uniform(rng, saturation), _uniform(rng, value)), dtype=np.float32)


def _plan_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random gradient with low-frequency colour noise and a few faint static clutter shapes."""
    res = size * _SUPERSAMPLE
    coords = (np.arange(res, dtype=np.float32) + 0.5) / _SUPERSAMPLE  # pixel centres, output-pixel units
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (res, res)
    grey = _uniform(rng, (0.3, 0.7))
    ends = np.clip(grey + rng.uniform(-0.18, 0.18, size=(2, 3)), 0.0, 1.0).astype(np.float32)
    direction = _uniform(rng, (0.0, 2.0 * math.pi))
    proj = (math.cos(direction) * (xx - size / 2) + math.sin(direction) * (yy - size / 2)) / size + 0.5  # (res, res)
    image = ends[0] + (ends[1] - ends[0]) * np.clip(proj, 0.0, 1.0)[..., None]  # (res, res, 3)
    noise = rng.uniform(-0.08, 0.08, size=(5, 5, 3)).astype(np.float32)
    image = image + _bilinear(noise, xx / size, yy / size)
    for _ in range(int(rng.integers(2, 5))):
        kind = int(rng.integers(3))
        cx, cy = _uniform(rng, (0.0, size)), _uniform(rng, (0.0, size))
        color = np.clip(grey + rng.uniform(-0.3, 0.3, size=3), 0.0, 1.0).astype(np.float32)
        alpha = _uniform(rng, (0.3, 0.55))
        dx, dy = xx - cx, yy - cy
        if kind == 0:  # thin bar
            angle = _uniform(rng, (0.0, math.pi))
            along = math.cos(angle) * dx + math.sin(angle) * dy
            across = -math.sin(angle) * dx + math.cos(angle) * dy
            half_length, half_width = _uniform(rng, (0.08, 0.18)) * size, _uniform(rng, (0.01, 0.02)) * size
            cover = ((np.abs(along) <= half_length) & (np.abs(across) <= half_width)).astype(np.float32)
        elif kind == 1:  # ring
            radius, width = _uniform(rng, (0.04, 0.08)) * size, _uniform(rng, (0.01, 0.02)) * size
            dist2 = dx * dx + dy * dy
            cover = ((dist2 <= (radius + width) ** 2) & (dist2 >= radius**2)).astype(np.float32)
        else:  # soft blob
            radius = _uniform(rng, (0.06, 0.14)) * size
            cover = np.maximum(0.0, 1.0 - (dx * dx + dy * dy) / (radius * radius)) ** 2
        image = image + (color - image) * (alpha * cover)[..., None]
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _plan_appearance(rng: np.random.Generator, background_mean: np.ndarray) -> Appearance:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    for _ in range(_MAX_TRIES):  # the main colour must stand out from the background
        main = _random_color(rng, (0.5, 1.0), (0.45, 1.0))
        if np.linalg.norm(main - background_mean) >= 0.35:
            break
    for _ in range(_MAX_TRIES):  # the second colour must be visible on the main one
        second = _random_color(rng, (0.3, 1.0), (0.15, 1.0))
        if np.linalg.norm(second - main) >= 0.3:
            break
    marker = np.full(3, 0.05 if _luma(main) > 0.5 else 0.95, dtype=np.float32)
    return Appearance(
        shape=shape,
        texture=texture,
        colors=np.stack([main, second, marker]),
        texture_period=_uniform(rng, (0.3, 0.5)),
        texture_angle=_uniform(rng, (0.0, math.pi)),
        noise=rng.uniform(0.0, 1.0, size=(5, 5)).astype(np.float32),
    )


def _phase(rng: np.random.Generator, num_frames: int) -> float:
    """A phase drawn uniformly from the grid ``k / (T - 1) - 1/2`` (k = 0 .. T-1) that a swept phase runs through."""
    return int(rng.integers(num_frames)) / (num_frames - 1) - 0.5


@dataclasses.dataclass(frozen=True)
class _Scene:
    """The class-independent part of a clip's geometry (``theta`` in the module docstring), in output pixels.

    The actor's centre is ``centre + travel * (u_x, u_y) + converge * u_c * direction``, its size
    ``actor_size * ratio ** u_s`` and its angle ``actor_angle + turn * u_a``; the partner's centre is
    ``partner_centre - converge * u_c * direction`` with a fixed size and angle.
    """

    actor_size: float
    ratio: float
    actor_angle: float
    turn: float
    partner_size: float
    partner_angle: float
    travel: float
    converge: float
    centre: tuple[float, float]
    partner_centre: tuple[float, float]
    direction: tuple[float, float]


def _draw_scene(rng: np.random.Generator, *, num_frames: int, size: int) -> _Scene:
    """Draw ``theta`` by rejection: candidates are drawn in batches and the first one that meets every condition is
    kept. Each condition holds for *all* phases, so none depends on the class: both objects stay inside the frame at
    their largest; the partner lies beyond the actor's travel square along ``direction``, so converging objects keep
    their order along it, and their distance falls by at least ``_CONVERGE_VISIBLE`` of their joint travel wherever
    the actor stands in that square. Raises RuntimeError when no candidate fits (never at the default sizes)."""
    n = _SCENE_BATCH
    for _ in range(_MAX_TRIES):
        actor_size = rng.uniform(*_SIZE_MID, n) * size  # (n,) candidates
        ratio = rng.uniform(*_SIZE_RATIO, n)
        largest = actor_size * np.sqrt(ratio)
        partner_size = (
            rng.uniform(*_PARTNER_SIZE, n)
            * size
            * rng.uniform(*_SIZE_RATIO, n) ** (rng.integers(num_frames, size=n) / (num_frames - 1) - 0.5)
        )  # the law of a size s * R ** u at a uniformly chosen frame, from a smaller range
        travel, converge = rng.uniform(*_TRAVEL, n) * size, rng.uniform(*_CONVERGE_TRAVEL, n) * size
        angle = rng.uniform(0.0, 2.0 * math.pi, n)
        direction = np.array([[math.cos(a) for a in angle], [math.sin(a) for a in angle]])  # (2, n) actor to partner
        reach = largest + _BORDER + travel / 2 + converge * np.abs(direction) / 2  # (2, n) actor, per axis
        fits = reach.max(axis=0) < size / 2
        reach = np.minimum(reach, size / 2)
        centre = reach + rng.uniform(size=(2, n)) * (size - 2 * reach)  # (2, n) middle of the actor's travel
        # The partner lies ahead along `direction`, beyond the actor's travel square along that axis.
        spread = travel * np.abs(direction).sum(axis=0) / 2  # (n,) half extent of the square along/across it
        near = spread + converge + _CLOSEST * (actor_size + partner_size)
        room = partner_size + _BORDER + converge * np.abs(direction) / 2  # (2, n)
        safe = np.where(np.abs(direction) > 1e-9, direction, 1.0)
        limit = np.where(direction > 0, size - room - centre, room - centre) / safe  # (2, n)
        far = np.where(np.abs(direction) > 1e-9, limit, np.inf).min(axis=0)  # (n,)
        fits &= far > near
        far = np.maximum(far, near)
        distance = np.sqrt(near**2 + rng.uniform(size=n) * (far**2 - near**2))  # uniform over the wedge's area
        gap = distance - spread - converge  # (n,) least along-axis gap of the converging centres
        closing = np.sqrt((gap + 2 * converge) ** 2 + spread**2) - np.sqrt(gap**2 + spread**2)  # least fall of distance
        fits &= closing >= _CONVERGE_VISIBLE * 2 * converge
        actor_angle, partner_angle = rng.uniform(0.0, 2.0 * math.pi, (2, n))
        turn = rng.uniform(*_TURN, n)
        if fits.any():
            i = int(np.argmax(fits))
            return _Scene(
                actor_size=float(actor_size[i]),
                ratio=float(ratio[i]),
                actor_angle=float(actor_angle[i]),
                turn=float(turn[i]),
                partner_size=float(partner_size[i]),
                partner_angle=float(partner_angle[i]),
                travel=float(travel[i]),
                converge=float(converge[i]),
                centre=(float(centre[0, i]), float(centre[1, i])),
                partner_centre=(
                    float(centre[0, i] + distance[i] * direction[0, i]),
                    float(centre[1, i] + distance[i] * direction[1, i]),
                ),
                direction=(float(direction[0, i]), float(direction[1, i])),
            )
    raise RuntimeError(f"could not place two objects in a {size}px frame")


# phase that each forward class sweeps (increasing over the clip; `up` sweeps u_y decreasing)
_SWEPT = {"left_to_right": "x", "up": "y", "closer": "s", "clockwise": "a", "converge": "c"}


def _forward_tracks(motion: str, rng: np.random.Generator, *, num_frames: int, size: int) -> tuple[ObjectTrack, ...]:
    """Tracks ``(partner, actor)`` of a forward class: the scene, then five phases of which the class sweeps one."""
    scene = _draw_scene(rng, num_frames=num_frames, size=size)
    phases = {key: np.full(num_frames, _phase(rng, num_frames)) for key in "xysac"}  # (T,) each
    sweep = np.linspace(-0.5, 0.5, num_frames)  # (T,)
    phases[_SWEPT[motion]] = -sweep if motion == "up" else sweep
    ex, ey = scene.direction
    shift = scene.converge * phases["c"]  # (T,) how far each object has moved towards the other
    actor = ObjectTrack(
        x=scene.centre[0] + scene.travel * phases["x"] + shift * ex,
        y=scene.centre[1] + scene.travel * phases["y"] + shift * ey,
        size=scene.actor_size * scene.ratio ** phases["s"],
        angle=scene.actor_angle + scene.turn * phases["a"],
        moving=True,
    )
    partner = ObjectTrack(
        x=scene.partner_centre[0] - shift * ex,
        y=scene.partner_centre[1] - shift * ey,
        size=np.full(num_frames, scene.partner_size),
        angle=np.full(num_frames, scene.partner_angle),
        moving=motion == "converge",
    )
    return partner, actor  # rendered in this order: the actor in front


def plan_tracks(
    motion: str, rng: np.random.Generator, *, num_frames: int = 8, size: int = 64
) -> tuple[ObjectTrack, ...]:
    """The object tracks ``(partner, actor)`` of a clip of class ``motion``, drawn from ``rng`` (geometry only).

    :func:`plan_clip` draws the same after the background and the appearance. A reverse class (see
    :data:`TIME_REVERSED`) consumes ``rng`` exactly like its forward partner and yields its tracks backwards.
    """
    _check_plan_args(motion, num_frames, size)
    forward = TIME_REVERSED.get(motion, motion)
    tracks = _forward_tracks(forward, rng, num_frames=num_frames, size=size)
    return tuple(_reverse_track(o) for o in tracks) if forward != motion else tracks


def _check_plan_args(motion: str, num_frames: int, size: int) -> None:
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {list(MOTIONS)}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to show a motion, got {num_frames}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16 (H.264 yuv420p), got {size}")


def _reverse_track(track: ObjectTrack) -> ObjectTrack:
    """The same track played backwards."""
    return dataclasses.replace(
        track,
        x=track.x[::-1].copy(),
        y=track.y[::-1].copy(),
        size=track.size[::-1].copy(),
        angle=track.angle[::-1].copy(),
    )


def plan_clip(motion: str, rng: np.random.Generator, *, num_frames: int = 8, size: int = 64) -> ClipPlan:
    """Draw everything random about one clip of class ``motion`` from ``rng``: background, appearance, tracks.

    A reverse class (see :data:`TIME_REVERSED`) consumes ``rng`` exactly like its forward partner and yields the
    partner's plan played backwards.
    """
    _check_plan_args(motion, num_frames, size)
    background = _plan_background(rng, size)
    appearance = _plan_appearance(rng, background.reshape(-1, 3).mean(axis=0))
    tracks = plan_tracks(motion, rng, num_frames=num_frames, size=size)
    return ClipPlan(
        motion=motion, size=size, num_frames=num_frames, background=background, appearance=appearance, objects=tracks
    )


# --------------------------------------------------------------------------------------------------- rendering


def render_plan(plan: ClipPlan, *, with_masks: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Render a plan to uint8 frames ``(T, H, W, 3)``; with ``with_masks`` also each object's anti-aliased coverage
    ``(T, num_objects, H, W)`` float32 in [0, 1] (object order of ``plan.objects``)."""
    size, ss, num_frames = plan.size, _SUPERSAMPLE, plan.num_frames
    res = size * ss
    app = plan.appearance
    marker_u, marker_v, marker_r = _MARKERS[app.shape]
    coords = (np.arange(res, dtype=np.float32) + 0.5) / ss  # supersampled pixel centres, output-pixel units
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, len(plan.objects), size, size), dtype=np.float32) if with_masks else None
    for t in range(num_frames):
        canvas = plan.background.copy()  # (res, res, 3)
        for k, obj in enumerate(plan.objects):
            cx, cy, radius, angle = float(obj.x[t]), float(obj.y[t]), float(obj.size[t]), float(obj.angle[t])
            x0, x1 = max(0, math.floor((cx - radius) * ss)), min(res, math.ceil((cx + radius) * ss) + 1)
            y0, y1 = max(0, math.floor((cy - radius) * ss)), min(res, math.ceil((cy + radius) * ss) + 1)
            dx = (coords[None, x0:x1] - cx) / radius  # (1, w)
            dy = (coords[y0:y1, None] - cy) / radius  # (h, 1)
            cos, sin = math.cos(angle), math.sin(angle)
            u = cos * dx + sin * dy  # (h, w) object coordinates: rotate by -angle
            v = cos * dy - sin * dx  # (h, w)
            inside = _shape_mask(app.shape, u, v)  # (h, w)
            color = _texture(app, u, v)  # (h, w, 3)
            on_marker = (u - marker_u) ** 2 + (v - marker_v) ** 2 <= marker_r * marker_r
            color[on_marker] = app.colors[2]
            patch = canvas[y0:y1, x0:x1]
            patch[inside] = color[inside]
            if masks is not None:
                full = np.zeros((res, res), dtype=np.float32)
                full[y0:y1, x0:x1] = inside
                masks[t, k] = full.reshape(size, ss, size, ss).mean(axis=(1, 3))
        small = canvas.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))  # (H, W, 3)
        frames[t] = np.clip(np.floor(small * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return frames, masks


def render_clip(motion: str, rng: np.random.Generator, *, num_frames: int = 8, size: int = 64) -> np.ndarray:
    """Render one clip of class ``motion`` (a key of :data:`MOTIONS`) to uint8 RGB frames ``(T, H, W, 3)``.

    Deterministic: the same ``rng`` state gives bit-identical frames. For a reverse class the frames are exactly
    those of the forward partner, drawn from the same ``rng`` state, in reverse order.
    """
    frames, _ = render_plan(plan_clip(motion, rng, num_frames=num_frames, size=size))
    return frames


# --------------------------------------------------------------------------------------------------- files


def _encode_mp4(path: Path, frames: np.ndarray, *, fps: int) -> None:
    """Write uint8 RGB frames ``(T, H, W, 3)`` as H.264 yuv420p with one closed GOP and no B-frames."""
    num_frames, height, width, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "crf": str(_CRF),
            "preset": "medium",
            "threads": "1",
            "x264-params": f"open-gop=0:keyint={max(num_frames, 1)}:bframes=0:scenecut=0",
        }
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclasses.dataclass(frozen=True)
class _ClipJob:
    path: Path
    motion: str
    seed: int
    split_index: int
    clip_index: int
    num_frames: int
    size: int
    fps: int


def _clip_rng(seed: int, split_index: int, clip_index: int) -> np.random.Generator:
    """Independent stream per clip from (seed, split, index): never depends on which worker renders it."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index, clip_index)))


def _make_clip(job: _ClipJob) -> None:
    rng = _clip_rng(job.seed, job.split_index, job.clip_index)
    frames = render_clip(job.motion, rng, num_frames=job.num_frames, size=job.size)
    _encode_mp4(job.path, frames, fps=job.fps)


def _split_labels(seed: int, split_index: int, num_classes: int, per_class: int) -> np.ndarray:
    """Balanced labels for one split in a seeded random order (so a video id does not reveal its label)."""
    labels = np.tile(np.arange(num_classes), per_class)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index,)))
    return rng.permutation(labels)


def _params(
    *, motions: Sequence[str], train_per_class: int, val_per_class: int, num_frames: int, size: int, fps: int, seed: int
) -> dict[str, Any]:
    """The parameters that define the dataset's content (what the manifest records and is compared on)."""
    motions = list(motions)
    unknown = [m for m in motions if m not in MOTIONS]
    if unknown:
        raise ValueError(f"unknown motions {unknown}; expected keys of MOTIONS: {list(MOTIONS)}")
    if not motions or len(set(motions)) != len(motions):
        raise ValueError(f"motions must be a non-empty list without repeats, got {motions}")
    for name, value, minimum in (
        ("train_per_class", train_per_class, 1),
        ("val_per_class", val_per_class, 1),
        ("num_frames", num_frames, 2),
        ("size", size, 16),
        ("fps", fps, 1),
        ("seed", seed, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if size % 2:
        raise ValueError(f"size must be even (H.264 yuv420p), got {size}")
    return {
        "motions": motions,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "seed": seed,
        "codec": "libx264",
        "pix_fmt": "yuv420p",
        "crf": _CRF,
    }


def _run_jobs(jobs: Sequence[_ClipJob], workers: int) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            _make_clip(job)
        return
    chunksize = max(1, min(16, len(jobs) // (4 * workers)))
    # a multiprocessing pool, not a ProcessPoolExecutor: leaving the block on an exception (Ctrl-C, SIGTERM) terminates
    # the workers at once instead of waiting for every queued clip
    with worker_context().Pool(workers) as pool:
        for _ in pool.imap_unordered(_make_clip, jobs, chunksize=chunksize):
            pass


def generate_synthetic_dataset(
    root: Path | str,
    *,
    motions: Sequence[str] = tuple(MOTIONS),
    train_per_class: int,
    val_per_class: int,
    num_frames: int = 8,
    size: int = 64,
    fps: int = 12,
    seed: int = 0,
    workers: int = 2,
) -> None:
    """Render and encode the motion dataset into ``root`` (see the module docstring for the layout).

    Args:
        root: output folder; its ``videos/``, ``annotations/`` and ``manifest.json`` are replaced.
        motions: class keys of :data:`MOTIONS`; label ``i`` is ``motions[i]``.
        train_per_class / val_per_class: clips per class in each split (balanced).
        num_frames / size / fps: frames per clip, frame side in pixels (even), frame rate of the files.
        seed: the same seed and parameters give bit-identical rendered frames, whatever ``workers`` is.
        workers: encoding processes; 0 or 1 renders in this process.
    """
    params = _params(
        motions=motions,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
    )
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    root = Path(root)
    _remove_dataset(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("written by rsa_lightning.data.synthetic; this folder may be regenerated\n")
    (root / "videos").mkdir(parents=True)
    (root / "annotations").mkdir(parents=True)
    motions = params["motions"]
    start = time.perf_counter()
    jobs, lists, counts = [], {}, {}
    for split_index, (split, per_class) in enumerate(zip(SPLITS, (train_per_class, val_per_class))):
        labels = _split_labels(seed, split_index, len(motions), per_class)
        lines = []
        for index, label in enumerate(labels):
            video = f"videos/{split}_{index:05d}.mp4"
            jobs.append(_ClipJob(root / video, motions[label], seed, split_index, index, num_frames, size, fps))
            lines.append(f"{video} {label}\n")
        lists[split], counts[split] = lines, len(lines)
    log.info(
        "rendering %d synthetic clips (%d classes) into %s with %d worker(s)", len(jobs), len(motions), root, workers
    )
    _run_jobs(jobs, workers)
    for split, lines in lists.items():
        (root / "annotations" / f"{split}.txt").write_text("".join(lines))
    (root / "annotations" / "classes.txt").write_text("".join(f"{MOTIONS[m]}\n" for m in motions))
    manifest = {
        "format_version": FORMAT_VERSION,
        "generator": "rsa_lightning.data.synthetic",
        "params": params,
        "class_names": [MOTIONS[m] for m in motions],
        "counts": counts,
    }
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / "manifest.json")
    elapsed = time.perf_counter() - start
    log.info("wrote %d clips in %.1f s (%.1f clips/s) to %s", len(jobs), elapsed, len(jobs) / elapsed, root)


GENERATED_VIDEO = re.compile(r"(train|val)_\d{5}\.mp4")
GENERATED_LISTS = ("train.txt", "val.txt", "classes.txt")


# written into data.root before anything else by the generator: a folder without it (or a manifest) is not ours
MARKER = ".rsa_synthetic"


def foreign_files(root: Path) -> list[Path]:
    """Files and folders under ``root/videos`` and ``root/annotations`` that the generator never writes; all of them
    when ``root`` has neither the generator's marker nor a manifest (a user's list dataset may well name its files
    ``annotations/train.txt`` and ``videos/train_00000.mp4`` too)."""
    expected = {"videos": GENERATED_VIDEO.fullmatch, "annotations": lambda name: name in GENERATED_LISTS}
    generated = (root / MARKER).is_file() or (root / "manifest.json").is_file()
    found = []
    for folder, ours in expected.items():
        if (root / folder).is_dir():
            found += [p for p in sorted((root / folder).iterdir()) if not (generated and p.is_file() and ours(p.name))]
        elif (root / folder).exists():
            found.append(root / folder)
    return found


def _remove_dataset(root: Path) -> None:
    """Remove what the generator writes, and nothing else: :class:`~rsa_lightning.errors.DataError` when
    ``root/videos`` or ``root/annotations`` hold files it does not write (a user's own data is never replaced)."""
    foreign = foreign_files(root)
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"data.root={root} holds files that rsa_lightning's synthetic generator did not write ({shown}): "
            "refusing to replace its videos/ and annotations/. Point data.root at an empty folder or a generated "
            "synthetic dataset, or use data=list (or another dataset config) for your own videos"
        )
    for name in ("manifest.json", "manifest.json.tmp"):
        (root / name).unlink(missing_ok=True)
    for name in ("videos", "annotations"):
        if (root / name).exists():
            shutil.rmtree(root / name)


def _incomplete_reason(root: Path, params: dict[str, Any]) -> Optional[str]:
    """Why the dataset at ``root`` cannot be used as is, or None when it is complete and matches ``params``."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest.json (never generated, or generation was interrupted)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"unreadable manifest.json ({error})"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"format version {manifest.get('format_version')} != {FORMAT_VERSION}"
    if manifest.get("params") != params:
        old = manifest.get("params") or {}
        changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        return f"parameters changed: {', '.join(changed)}"
    classes = root / "annotations" / "classes.txt"
    if not classes.is_file() or classes.read_text().splitlines() != manifest.get("class_names"):
        return "annotations/classes.txt is missing or differs from the manifest"
    for split in SPLITS:
        list_file = root / "annotations" / f"{split}.txt"
        if not list_file.is_file():
            return f"{list_file.relative_to(root)} is missing"
        lines = list_file.read_text().splitlines()
        if len(lines) != manifest.get("counts", {}).get(split):
            return f"{list_file.relative_to(root)} has {len(lines)} entries, the manifest says {manifest['counts']}"
        for line in lines:
            video = root / line.rsplit(maxsplit=1)[0]
            if not video.is_file() or video.stat().st_size == 0:
                return f"video {video.relative_to(root)} is missing or empty"
    return None


def ensure_synthetic_dataset(
    root: Path | str,
    *,
    motions: Sequence[str] = tuple(MOTIONS),
    train_per_class: int,
    val_per_class: int,
    num_frames: int = 8,
    size: int = 64,
    fps: int = 12,
    seed: int = 0,
    workers: int = 2,
) -> Path:
    """Return ``root`` once it holds the dataset that :func:`generate_synthetic_dataset` makes with these arguments.

    A complete dataset (manifest present, same parameters, every listed video a non-empty file) is kept as is;
    anything else is logged and regenerated from scratch. ``workers`` is not a content parameter. Not safe for
    concurrent callers: call it from one process (rank 0).
    """
    root = Path(root)
    kwargs = dict(
        motions=motions,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
    )
    reason = _incomplete_reason(root, _params(**kwargs))
    if reason is None:
        log.info("synthetic dataset at %s is complete", root)
        return root
    log.info("synthetic dataset at %s: %s; generating it", root, reason)
    generate_synthetic_dataset(root, workers=workers, **kwargs)
    return root


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic motion video dataset.")
    parser.add_argument("--root", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--motions", default=",".join(MOTIONS), help="comma-separated keys of MOTIONS")
    parser.add_argument("--train-per-class", type=int, default=120)
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="regenerate even when a matching dataset exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs = dict(
        motions=[m.strip() for m in args.motions.split(",") if m.strip()],
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        num_frames=args.num_frames,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        workers=args.workers,
    )
    if args.force:
        generate_synthetic_dataset(args.root, **kwargs)
    else:
        ensure_synthetic_dataset(args.root, **kwargs)


if __name__ == "__main__":
    _main()
