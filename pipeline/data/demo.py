"""A synthetic Carvana dataset in Kaggle's layout, for tests, demos and smoke runs.

Each car is a small 3-D model (a convex body prism, a cabin with windows and pillars, four
wheels with rims, lights, grille, plate, door lines) in car coordinates (metres; x forward,
y left, z up). Image ``<car>_<NN>.jpg`` shows it turned by yaw = (NN - 1) * 22.5 degrees in
front of a fixed perspective camera, as on Carvana's turntable: 01 is the front, 05 a side,
09 the rear, 13 the other side. Faces are rasterised with a z-buffer, so the mask is exactly
the set of pixels the car's own faces cover; the studio (gradient wall, floor, horizon line,
soft blurred shadow under the car) is background and never in the mask. Body colours include
whites and greys close to the wall, and tyres and windows are as dark as the shadow, so no
colour threshold recovers the mask.

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, car, angle): the same
``DemoConfig`` gives byte-identical masks and JPEGs, whatever the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.config import DemoConfig
from pipeline.data.io import write_mask_gif
from pipeline.data.layout import ANGLES, Layout
from pipeline.errors import PipelineError
from pipeline.rle import encode

# Bump when the renderer changes, so a stamped demo folder made by older code is regenerated.
DEMO_VERSION = 1
STAMP = "demo.json"

# fmt: off
# (make, model, body type): body types set the car's proportions.
CATALOG = [
    ("Acura", "MDX", "suv"), ("Acura", "TLX", "sedan"), ("Audi", "A4", "sedan"),
    ("Audi", "Q5", "suv"), ("BMW", "3 Series", "sedan"), ("BMW", "X3", "suv"),
    ("Chevrolet", "Malibu", "sedan"), ("Chevrolet", "Equinox", "suv"),
    ("Dodge", "Challenger", "coupe"), ("Ford", "Focus", "hatchback"),
    ("Ford", "Mustang", "coupe"), ("Honda", "Civic", "sedan"), ("Honda", "Odyssey", "van"),
    ("Hyundai", "Elantra", "sedan"), ("Jeep", "Grand Cherokee", "suv"),
    ("Kia", "Soul", "hatchback"), ("Mazda", "MAZDA3", "hatchback"),
    ("Nissan", "Altima", "sedan"), ("Subaru", "Outback", "wagon"), ("Toyota", "Camry", "sedan"),
    ("Toyota", "Sienna", "van"), ("Volkswagen", "Golf", "hatchback"), ("Volvo", "V60", "wagon"),
]
TRIMS = ["Base", "LX", "EX", "Sport", "Limited", "SE", "w/Tech", "Premium"]

# Paint colours (RGB) and how often they occur; whites and greys dominate, as on real lots.
PAINTS = [
    ((236, 236, 233), 0.18), ((224, 225, 219), 0.08), ((186, 189, 193), 0.14),
    ((122, 125, 130), 0.11), ((24, 24, 27), 0.14), ((160, 22, 28), 0.08),
    ((28, 52, 120), 0.07), ((20, 30, 60), 0.04), ((32, 80, 52), 0.03),
    ((192, 176, 150), 0.04), ((92, 62, 42), 0.03), ((212, 104, 32), 0.03),
    ((222, 192, 44), 0.03),
]

# Proportions per body type, each a (low, high) range: total height and ground clearance in
# metres, cabin base and roof extents (rear, front) as fractions of the length, length in m.
BODY_TYPES = {
    #             height        clearance     cabin base      cabin roof      length
    "sedan":     ((1.40, 1.50), (0.13, 0.17), (-0.33, 0.17), (-0.20, 0.00), (4.5, 5.0)),
    "coupe":     ((1.30, 1.40), (0.11, 0.14), (-0.30, 0.14), (-0.14, -0.02), (4.4, 4.9)),
    "hatchback": ((1.45, 1.60), (0.13, 0.17), (-0.46, 0.16), (-0.40, 0.00), (4.0, 4.4)),
    "wagon":     ((1.48, 1.62), (0.16, 0.21), (-0.46, 0.15), (-0.44, -0.01), (4.6, 4.9)),
    "suv":       ((1.65, 1.85), (0.19, 0.24), (-0.46, 0.18), (-0.45, 0.03), (4.5, 5.0)),
    "van":       ((1.72, 1.82), (0.15, 0.18), (-0.47, 0.28), (-0.46, 0.12), (5.0, 5.2)),
}
# fmt: on

# Fixed camera (the turntable rotates the car, not the camera).
CAMERA_DISTANCE = 9.0  # metres from the turntable centre
CAMERA_ELEVATION = math.radians(11.0)
CAMERA_TARGET_Z = 0.75  # the camera looks at this height above the turntable centre
REFERENCE_LENGTH = 4.6  # a car this long spans FILL_WIDTH of the image seen from the side
FILL_WIDTH = 0.78
DECAL = 0.004  # decals (windows, lights, rims) float this far off their face (metres)


# --------------------------------------------------------------------------- identities


def car_ids(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """12-hex-digit train and test car ids, distinct, sorted, derived from ``cfg.seed``."""
    rng = np.random.default_rng([cfg.seed, 0xCA7])
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < cfg.train_cars + cfg.test_cars:
        cid = rng.bytes(6).hex()
        if cid not in seen:
            seen.add(cid)
            ids.append(cid)
    return sorted(ids[: cfg.train_cars]), sorted(ids[cfg.train_cars :])


@dataclass(frozen=True)
class CarSpec:
    """Everything that makes one car look the way it does (shared by its 16 images)."""

    car_id: str
    index: int  # position in train + test; seeds the car's random draws
    year: int
    make: str
    model: str
    trim: str
    body: str
    length: float
    width: float
    height: float
    clearance: float
    wheel_radius: float
    wheelbase: float
    cabin_base: tuple[float, float]
    cabin_roof: tuple[float, float]
    paint: tuple[float, float, float]
    rim: tuple[float, float, float]
    studio: tuple[float, ...]  # wall top/bottom, floor far/near greys, tint, horizon, shadow


def car_spec(car_id: str, index: int, seed: int) -> CarSpec:
    """Draw one car's make, proportions, paint and studio lighting."""
    rng = np.random.default_rng([seed, index, 0x5EC])
    make, model, body = CATALOG[rng.integers(len(CATALOG))]
    heights, clearances, base, roof, lengths = BODY_TYPES[body]
    length = rng.uniform(*lengths)
    weights = np.array([w for _, w in PAINTS])
    paint = np.array(PAINTS[rng.choice(len(PAINTS), p=weights / weights.sum())][0], float)
    paint = np.clip(paint + rng.normal(0, 6, 3), 0, 255)
    rim = (190.0, 192.0, 196.0) if rng.random() < 0.6 else (70.0, 72.0, 76.0)
    wall = rng.uniform(222, 246)
    studio = (
        wall,  # wall brightness at the top
        wall - rng.uniform(0, 22),  # wall at the horizon
        rng.uniform(196, 232),  # floor at the horizon
        rng.uniform(205, 245),  # floor at the bottom of the frame
        rng.uniform(-4, 4),  # warm/cool tint
        rng.uniform(0.40, 0.50),  # horizon row as a fraction of the height
        rng.uniform(0.4, 0.65),  # shadow strength
    )
    return CarSpec(
        car_id=car_id,
        index=index,
        year=int(rng.integers(2008, 2018)),
        make=make,
        model=model,
        trim=TRIMS[rng.integers(len(TRIMS))],
        body=body,
        length=length,
        width=rng.uniform(1.75, 1.98),
        height=rng.uniform(*heights),
        clearance=rng.uniform(*clearances),
        wheel_radius=rng.uniform(0.31, 0.37) + (0.03 if body == "suv" else 0.0),
        wheelbase=length * rng.uniform(0.58, 0.62),
        cabin_base=tuple(np.add(base, rng.uniform(-0.02, 0.02, 2))),
        cabin_roof=tuple(np.add(roof, rng.uniform(-0.02, 0.02, 2))),
        paint=tuple(paint),
        rim=rim,
        studio=studio,
    )


# --------------------------------------------------------------------------- geometry


@dataclass
class Face:
    """A planar convex polygon in car coordinates with its outward normal and base colour."""

    verts: np.ndarray  # (k, 3)
    normal: np.ndarray  # (3,), unit, outward
    color: tuple[float, float, float]
    material: str  # paint | glass | tyre | rim | matte | light


def _solid(verts: np.ndarray, faces: list[list[int]], color, material) -> list[Face]:
    """Faces of a convex solid; normals are oriented away from the solid's centroid."""
    centre = verts.mean(axis=0)
    out = []
    for idx in faces:
        v = verts[idx]
        n = np.cross(v[1] - v[0], v[2] - v[0])
        n /= np.linalg.norm(n)
        if np.dot(n, v.mean(axis=0) - centre) < 0:
            n = -n
        out.append(Face(v, n, color, material))
    return out


def _prism(profile_xz: np.ndarray, y0: float, y1: float, color, material) -> list[Face]:
    """Extrude a convex polygon of the x-z plane between y0 and y1."""
    k = len(profile_xz)
    a = np.column_stack([profile_xz[:, 0], np.full(k, y0), profile_xz[:, 1]])
    b = np.column_stack([profile_xz[:, 0], np.full(k, y1), profile_xz[:, 1]])
    verts = np.vstack([a, b])
    faces = [list(range(k)), list(range(k, 2 * k))]
    faces += [[i, (i + 1) % k, k + (i + 1) % k, k + i] for i in range(k)]
    return _solid(verts, faces, color, material)


def _decal(face: Face, verts: np.ndarray, color, material, lift: float = 1.0) -> Face:
    """A polygon lying on ``face`` (it must stay inside it), lifted just off the surface."""
    return Face(verts + face.normal * DECAL * lift, face.normal, color, material)


def _circle(cx: float, cz: float, r: float, n: int = 20) -> np.ndarray:
    """(n, 2) points of a circle in the x-z plane."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cz + r * np.sin(t)])


def _at_y(points_xz: np.ndarray, y: float) -> np.ndarray:
    """Lift x-z points into 3-D at width position y."""
    return np.column_stack([points_xz[:, 0], np.full(len(points_xz), y), points_xz[:, 1]])


def _rect_x(x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """A rectangle in the plane x = const (for the front and rear faces)."""
    return np.array([(x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)])


def _body(spec: CarSpec, belt: float) -> list[Face]:
    """The lower body: a convex side profile (front to the right) extruded across the width.

    Its flat top reaches at least under the whole cabin, so the cabin never overhangs a
    sloped corner.
    """
    L, c, hb = spec.length, spec.clearance, belt - spec.clearance
    xr0, xf0 = np.multiply(spec.cabin_base, L)
    top_front = min(max(0.3 * L, xf0), 0.42 * L)
    top_rear = max(min(-0.42 * L, xr0), -0.49 * L)
    profile = np.array([
        (0.44 * L, c), (L / 2, c + 0.2 * hb), (L / 2, c + 0.66 * hb),
        (0.43 * L, c + 0.93 * hb), (top_front, belt), (top_rear, belt),
        (-L / 2, c + 0.8 * hb), (-L / 2, c + 0.2 * hb), (-0.45 * L, c),
    ])  # fmt: skip
    return _prism(profile, -spec.width / 2, spec.width / 2, spec.paint, "paint")


def _cabin(spec: CarSpec, belt: float) -> list[Face]:
    """A frustum on the belt line, narrower at the roof (tumblehome), with windows: each
    cabin side shrunk toward its centre in glass, and a B-pillar across the side windows."""
    (xr0, xf0), (xr1, xf1) = (
        np.multiply(spec.cabin_base, spec.length),
        np.multiply(spec.cabin_roof, spec.length),
    )
    yb, yt, top = spec.width / 2 - 0.05, spec.width / 2 - 0.2, spec.height
    corners = np.array([
        (xr0, -yb, belt), (xf0, -yb, belt), (xf0, yb, belt), (xr0, yb, belt),
        (xr1, -yt, top), (xf1, -yt, top), (xf1, yt, top), (xr1, yt, top),
    ])  # fmt: skip
    quads = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]
    cabin = _solid(corners, quads, spec.paint, "paint")
    faces = list(cabin)
    for f in cabin[2:]:  # the four sloping sides; [0] and [1] are floor and roof
        side = abs(f.normal[1]) > 0.5
        centre = f.verts.mean(axis=0)
        glass = centre + (f.verts - centre) * (0.8 if side else 0.88)
        faces.append(_decal(f, glass, (34, 40, 50), "glass"))
        if side:
            by_height = f.verts[np.argsort(f.verts[:, 2])]
            low, high = (e[np.argsort(e[:, 0])] for e in (by_height[:2], by_height[2:]))
            pillar = [low[0] + (low[1] - low[0]) * t for t in (0.47, 0.53)]
            pillar += [high[0] + (high[1] - high[0]) * t for t in (0.53, 0.47)]
            faces.append(_decal(f, np.array(pillar), spec.paint, "paint", lift=2.0))
    return faces


def _trim(spec: CarSpec, body: list[Face], belt: float) -> list[Face]:
    """Head and tail lights, grille and plate on the vertical ends; door lines on the sides."""
    L, W, c, hb = spec.length, spec.width, spec.clearance, belt - spec.clearance
    front = next(f for f in body if f.normal[0] > 0.99)
    rear = next(f for f in body if f.normal[0] < -0.99)
    faces = []
    for s in (-1, 1):
        head = _rect_x(L / 2, s * 0.28 * W, s * 0.45 * W, c + 0.45 * hb, c + 0.62 * hb)
        tail = _rect_x(-L / 2, s * 0.3 * W, s * 0.46 * W, c + 0.55 * hb, c + 0.76 * hb)
        faces.append(_decal(front, head, (228, 228, 216), "light"))
        faces.append(_decal(rear, tail, (168, 22, 26), "light"))
    grille = _rect_x(L / 2, -0.22 * W, 0.22 * W, c + 0.25 * hb, c + 0.5 * hb)
    plate = _rect_x(-L / 2, -0.12 * W, 0.12 * W, c + 0.3 * hb, c + 0.48 * hb)
    faces.append(_decal(front, grille, (30, 31, 34), "matte"))
    faces.append(_decal(rear, plate, (236, 236, 228), "matte"))
    door_x = L * sum(spec.cabin_base) / 2
    line = np.array(
        [
            (door_x - 0.006, c + 0.12 * hb),
            (door_x + 0.006, c + 0.12 * hb),
            (door_x + 0.006, belt - 0.02),
            (door_x - 0.006, belt - 0.02),
        ]
    )
    for side in (f for f in body if abs(f.normal[1]) > 0.99):
        y = side.verts[0, 1]
        faces.append(_decal(side, _at_y(line, y), tuple(np.multiply(spec.paint, 0.45)), "matte"))
    return faces


def _wheels(spec: CarSpec, body: list[Face], belt: float) -> list[Face]:
    """Tyre cylinders whose outer faces sit just outside the body, rims and hubs on them, and
    dark wheel arches on the body around them."""
    r, c, tyre_width = spec.wheel_radius, spec.clearance, 0.22
    faces = []
    for side in (f for f in body if abs(f.normal[1]) > 0.99):
        s = np.sign(side.normal[1])
        y_body, y_out = side.verts[0, 1], s * (spec.width / 2 + 0.01)
        for x in (-spec.wheelbase / 2, spec.wheelbase / 2):
            arch = _circle(x, r, 1.13 * r, 24)
            arch[:, 1] = np.clip(arch[:, 1], c, belt - 0.06)  # stays inside the side face
            faces.append(_decal(side, _at_y(arch, y_body), (16, 16, 18), "matte"))
            tyre = _prism(_circle(x, r, r), y_out, y_out - s * tyre_width, (22, 22, 24), "tyre")
            faces += tyre
            outer = tyre[0]  # the face at y_out
            faces.append(_decal(outer, _at_y(_circle(x, r, 0.62 * r), y_out), spec.rim, "rim"))
            hub = _at_y(_circle(x, r, 0.16 * r, 10), y_out)
            faces.append(_decal(outer, hub, tuple(np.multiply(spec.rim, 0.4)), "rim", lift=2.0))
    return faces


def build_car(spec: CarSpec) -> list[Face]:
    """The car's faces in car coordinates (origin under the car's centre on the floor)."""
    belt = spec.clearance + 0.52 * (spec.height - spec.clearance)  # body top, window bottom
    body = _body(spec, belt)
    return body + _cabin(spec, belt) + _trim(spec, body, belt) + _wheels(spec, body, belt)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at +x looking at the turntable; pixel coordinates are (column, row)."""

    focal: float
    cx: float
    cy: float

    @staticmethod
    def for_image(height: int, width: int, scale: float = 1.0, shift=(0.0, 0.0)) -> Camera:
        focal = FILL_WIDTH * width * CAMERA_DISTANCE / REFERENCE_LENGTH * scale
        return Camera(focal, width / 2 + shift[0] * width, height / 2 + shift[1] * height)

    def basis(self) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 world->camera rotation, camera position); camera axes right, up, forward."""
        pos = np.array(
            [
                CAMERA_DISTANCE * math.cos(CAMERA_ELEVATION),
                0.0,
                CAMERA_TARGET_Z + CAMERA_DISTANCE * math.sin(CAMERA_ELEVATION),
            ]
        )
        fwd = np.array([0.0, 0.0, CAMERA_TARGET_Z]) - pos
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        return np.stack([right, up, fwd]), pos

    def project(self, cam_pts: np.ndarray) -> np.ndarray:
        """Camera-frame points (n, 3) -> pixel (column, row) (n, 2)."""
        z = cam_pts[:, 2:3]
        return np.column_stack(
            [self.cx + self.focal * cam_pts[:, 0:1] / z, self.cy - self.focal * cam_pts[:, 1:2] / z]
        )


def _yaw(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])


LIGHT = np.array([0.55, 0.35, 1.0]) / np.linalg.norm([0.55, 0.35, 1.0])  # world frame


def _shade(face: Face, n_world: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Flat colour of a face: ambient + diffuse studio light, a sheen on glossy materials."""
    base = np.asarray(face.color, float)
    diffuse = max(0.0, float(n_world @ LIGHT))
    colour = base * (0.5 + 0.55 * diffuse)
    if face.material in ("paint", "glass"):
        # Studio ceiling reflected by upward-facing panels, and the walls by side panels.
        half = LIGHT + view
        half /= np.linalg.norm(half)
        sheen = max(0.0, float(n_world @ half)) ** 12
        up = max(0.0, n_world[2]) ** 2
        colour += (0.22 if face.material == "paint" else 0.35) * up * 255 + 60 * sheen
    return np.clip(colour, 0, 255)


def _raster(inv_depth: np.ndarray, ids: np.ndarray, pts: np.ndarray, plane, face_id: int):
    """z-buffer one convex polygon: ``plane`` = (a, b, c) with 1/z = a*col + b*row + c."""
    h, w = ids.shape
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x0 > x1 or y0 > y1:
        return
    inside = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    poly = np.round((pts - [x0, y0]) * 16).astype(np.int32)
    cv2.fillPoly(inside, [poly], 1, lineType=cv2.LINE_8, shift=4)
    a, b, c = plane
    cols = np.arange(x0, x1 + 1, dtype=np.float64) * a
    rows = np.arange(y0, y1 + 1, dtype=np.float64)[:, None] * b + c
    depth = (rows + cols).astype(np.float32)
    zb = inv_depth[y0 : y1 + 1, x0 : x1 + 1]
    win = inside.astype(bool) & (depth > zb)
    zb[win] = depth[win]
    ids[y0 : y1 + 1, x0 : x1 + 1][win] = face_id


def render_car(faces: list[Face], yaw: float, camera: Camera, height: int, width: int):
    """-> (car colours float32 HxWx3, face id per pixel int16 HxW with -1 for background)."""
    rot, pos = camera.basis()
    world_rot = _yaw(yaw)
    inv_depth = np.zeros((height, width), np.float32)
    ids = np.full((height, width), -1, np.int16)
    colours = np.zeros((len(faces) + 1, 3), np.float32)  # last row: background
    for i, face in enumerate(faces):
        world = face.verts @ world_rot.T
        n_world = world_rot @ face.normal
        view = pos - world.mean(axis=0)
        view /= np.linalg.norm(view)
        if n_world @ view < 1e-3:  # back face or edge-on
            continue
        cam = (world - pos) @ rot.T
        n_cam = rot @ n_world
        h = float(n_cam @ cam[0])  # plane n.X = h in camera coordinates
        f = camera.focal
        plane = (
            n_cam[0] / (f * h),
            -n_cam[1] / (f * h),
            (n_cam[2] - n_cam[0] * camera.cx / f + n_cam[1] * camera.cy / f) / h,
        )
        _raster(inv_depth, ids, camera.project(cam), plane, i)
        colours[i] = _shade(face, n_world, view)
    return colours, ids


def _footprint_shadow(spec: CarSpec, yaw: float, camera: Camera, height: int, width: int):
    """Soft shadow (0..1, HxW float32) of the car on the floor: blurred footprint + wheels."""
    small = 4 if min(height, width) >= 256 else 1
    h, w = -(-height // small), -(-width // small)
    rot, pos = camera.basis()
    world_rot = _yaw(yaw)
    shadow = np.zeros((h, w), np.float32)

    def floor_poly(pts_xy: np.ndarray, value: float):
        pts = np.column_stack([pts_xy, np.zeros(len(pts_xy))]) @ world_rot.T
        pix = camera.project((pts - pos) @ rot.T) / small
        cv2.fillPoly(shadow, [np.round(pix * 16).astype(np.int32)], value, cv2.LINE_AA, 4)

    L, W = spec.length * 1.1, spec.width * 1.3
    floor_poly(np.array([(-L / 2, -W / 2), (L / 2, -W / 2), (L / 2, W / 2), (-L / 2, W / 2)]), 0.8)
    sigma = max(0.5, 0.012 * w)
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigma)
    for x in (-spec.wheelbase / 2, spec.wheelbase / 2):  # darker contact patches
        for y in (-spec.width / 2, spec.width / 2):
            patch = np.zeros_like(shadow)
            t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            pts = np.column_stack([x + 0.35 * np.cos(t), y + 0.2 * np.sin(t), np.zeros(12)])
            pix = camera.project((pts @ world_rot.T - pos) @ rot.T) / small
            cv2.fillPoly(patch, [np.round(pix * 16).astype(np.int32)], 0.6, cv2.LINE_AA, 4)
            shadow = np.maximum(shadow, cv2.GaussianBlur(patch, (0, 0), sigma / 2))
    if small > 1:
        shadow = cv2.resize(shadow, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(shadow, 0, 1)


def studio_background(spec: CarSpec, height: int, width: int, rng) -> np.ndarray:
    """Wall and floor gradients meeting at a soft horizon line, with a gentle vignette."""
    wall_top, wall_low, floor_far, floor_near, tint, horizon, _ = spec.studio
    rows = np.arange(height, dtype=np.float32) / max(height - 1, 1)
    hz = horizon + rng.uniform(-0.01, 0.01)
    wall = wall_top + (wall_low - wall_top) * np.clip(rows / hz, 0, 1)
    floor = floor_far + (floor_near - floor_far) * np.clip((rows - hz) / (1 - hz), 0, 1)
    blend = np.clip((rows - hz) / max(0.006, 2.0 / height), 0, 1)  # a few pixels of edge
    grey = wall * (1 - blend) + floor * blend
    grey -= 14 * np.exp(-(((rows - hz) * height / max(1.5, 0.002 * height)) ** 2))  # the line
    grey *= rng.uniform(0.97, 1.03)  # exposure
    cols = np.arange(width, dtype=np.float32) / max(width - 1, 1)
    vignette = 1 - 0.07 * ((cols - 0.5) * 2) ** 2
    plane = np.outer(grey, vignette).astype(np.float32)
    # warm/cool tint: red and blue move in opposite directions
    return cv2.merge(
        [plane + np.float32(tint), plane + np.float32(0.2 * tint), plane - np.float32(tint)]
    )


# How strongly each material mirrors the studio lights.
GLOSS = {"paint": 0.8, "glass": 0.9, "light": 0.3, "rim": 0.4}


def _smooth_field(rng, grid: tuple[int, int], height: int, width: int, lo: float, hi: float):
    """A smooth random HxW float32 field: a small uniform grid upsampled bicubically."""
    small = rng.uniform(lo, hi, grid).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def render_image(
    spec: CarSpec,
    faces: list[Face],
    angle: int,
    height: int,
    width: int,
    seed: int,
    shadow: bool = True,
):
    """One photo: -> (RGB uint8 HxWx3, mask uint8 HxW in {0, 1}).

    ``shadow=False`` leaves the floor unshaded (everything else identical), for checks.
    """
    rng = np.random.default_rng([seed, spec.index, angle, 0x1A6])
    # Tiny images are drawn at 2x and reduced, so their edges are anti-aliased like a photo.
    ss = 2 if height * width < 400_000 else 1
    H, W = height * ss, width * ss
    yaw = (angle - 1) * 22.5 + rng.uniform(-1.5, 1.5)
    camera = Camera.for_image(
        H,
        W,
        scale=rng.uniform(0.97, 1.03),
        shift=(rng.uniform(-0.015, 0.015), rng.uniform(-0.02, 0.03)),
    )
    colours, ids = render_car(faces, yaw, camera, H, W)
    car = ids >= 0

    img = studio_background(spec, H, W, rng)
    if shadow:
        floor_shade = _footprint_shadow(spec, yaw, camera, H, W)
        img *= (1 - spec.studio[6] * floor_shade)[..., None]

    # Car pixels over the studio. Panels are not flat: a low-frequency brightness field, and
    # glossy paint and glass mirror the studio's softboxes as bright patches (which is also
    # why dark cars are not separable from the light studio by colour alone).
    where = np.flatnonzero(car)
    face = ids.reshape(-1)[where]
    field = _smooth_field(rng, (4, 6), H, W, 0.82, 1.12).reshape(-1)[where, None]
    softbox = _smooth_field(rng, (3, 5), H, W, 0.0, 1.0).reshape(-1)[where, None]
    softbox = np.clip((softbox - 0.5) * 3.0, 0, 1) * np.float32(rng.uniform(0.55, 0.9))
    gloss = np.array([GLOSS.get(f.material, 0.0) for f in faces] + [0.0], np.float32)
    colour = colours[face] * field
    colour += (np.float32(238) - colour) * softbox * gloss[face, None]
    img.reshape(-1, 3)[where] = colour

    if ss > 1:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        cover = cv2.resize(car.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        mask = (cover >= 0.5).astype(np.uint8)
    else:
        img = cv2.GaussianBlur(img, (0, 0), 0.7)  # lens softness: anti-aliases the edges
        mask = car.astype(np.uint8)
    # Sensor noise: uniform integers (sd 2.6 levels) are 7x faster to draw than normals.
    img += rng.integers(-4, 5, img.shape, dtype=np.int8) + np.float32(0.5)  # +0.5: rounding
    return np.clip(img, 0, 255, out=img).astype(np.uint8), mask


# --------------------------------------------------------------------------- writing


def _jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise PipelineError("could not encode a demo JPEG")
    return buf.tobytes()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _render_task(task) -> tuple[str, str | None]:
    """Worker: render and write one image (and its mask for train). -> (img name, rle)."""
    spec, split, angle, root, height, width, seed = task
    faces = build_car(spec)
    rgb, mask = render_image(spec, faces, angle, height, width, seed)
    layout = Layout(root)
    img = f"{spec.car_id}_{angle:02d}.jpg"
    quality = int(np.random.default_rng([seed, spec.index, angle, 0x0A]).integers(86, 94))
    _write_bytes(layout.image_path(img, split), _jpeg_bytes(rgb, quality))
    if split != "train":
        return img, None
    with atomic_path(layout.mask_path(img)) as tmp:
        write_mask_gif(tmp, mask)
    return img, encode(mask)


def _csv_text(header: list[str], rows: list[list], quote_all: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(
        buf, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="\n"
    )
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def read_stamp(root: str | Path) -> dict | None:
    """The ``demo.json`` stamp of a generated folder, or None."""
    path = Path(root) / STAMP
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stamp_for(cfg: DemoConfig) -> dict:
    return {"version": DEMO_VERSION, "demo": dataclasses.asdict(cfg)}


def is_current(root: str | Path, cfg: DemoConfig) -> bool:
    """True when ``root`` holds a complete demo dataset generated with exactly ``cfg``."""
    return read_stamp(root) == stamp_for(cfg)


def _prepare_root(root: Path) -> None:
    """Refuse to write into a folder holding other data; clear an earlier demo's files."""
    layout = Layout(root)
    ours = (root / STAMP).is_file() or (root / f".{STAMP}.partial").is_file()
    has_data = any(d.is_dir() and any(d.iterdir()) for d in (layout.train_dir, layout.test_dir))
    if has_data and not ours:
        raise PipelineError(
            f"{root}: already holds images that the demo generator did not write; "
            "choose an empty folder for the demo (--out) or remove this one"
        )
    for d in (layout.train_dir, layout.mask_dir, layout.test_dir):
        if d.is_dir():
            shutil.rmtree(d)
    (root / STAMP).unlink(missing_ok=True)


def generate_demo(
    root: str | Path,
    cfg: DemoConfig | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic dataset in Kaggle layout under ``root`` and return ``root``.

    ``cfg.train_cars`` cars get 16 images with GIF masks and ``train_masks.csv`` rows;
    ``cfg.test_cars`` cars get 16 test images listed in ``sample_submission.csv``;
    ``metadata.csv`` lists all of them. ``workers`` processes render in parallel (default:
    up to 2 for large images, none for tiny ones); the output does not depend on it.
    The stamp ``demo.json`` is written last, so its presence means the folder is complete.
    """
    cfg = cfg or DemoConfig()
    if cfg.train_cars < 0 or cfg.test_cars < 0 or cfg.train_cars + cfg.test_cars == 0:
        raise PipelineError("data.demo: train_cars and test_cars must be >= 0, not both 0")
    if cfg.height < 16 or cfg.width < 16:
        raise PipelineError("data.demo: height and width must be at least 16 pixels")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _prepare_root(root)
    (root / f".{STAMP}.partial").touch()  # marks the folder as ours while it is incomplete
    layout = Layout(root)
    for d in (layout.train_dir, layout.mask_dir, layout.test_dir):
        d.mkdir(parents=True, exist_ok=True)

    train_ids, test_ids = car_ids(cfg)
    specs = [car_spec(cid, i, cfg.seed) for i, cid in enumerate(train_ids + test_ids)]
    split = {**dict.fromkeys(train_ids, "train"), **dict.fromkeys(test_ids, "test")}
    tasks = [
        (spec, split[spec.car_id], angle, str(root), cfg.height, cfg.width, cfg.seed)
        for spec in specs
        for angle in range(1, ANGLES + 1)
    ]

    if workers is None:
        big = len(tasks) * cfg.height * cfg.width > 20_000_000
        workers = min(2, os.cpu_count() or 1) if big else 0
    results = _run(tasks, workers, progress)

    rles = {img: rle for img, rle in results if rle is not None}
    write_text(
        layout.train_masks_csv,
        _csv_text(["img", "rle_mask"], [[img, rles[img]] for img in sorted(rles)]),
    )
    tests = sorted(img for img, rle in results if rle is None)
    write_text(
        layout.sample_submission_csv,
        _csv_text(["img", "rle_mask"], [[img, "1 1"] for img in tests]),
    )
    meta = sorted([[s.car_id, str(s.year), s.make, s.model, s.model, s.trim] for s in specs])
    write_text(
        layout.metadata_csv,
        _csv_text(["id", "year", "make", "model", "trim1", "trim2"], meta, True),
    )
    write_json(root / STAMP, stamp_for(cfg))
    (root / f".{STAMP}.partial").unlink(missing_ok=True)
    return root


def _run(tasks: list, workers: int, progress: bool) -> list[tuple[str, str | None]]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="demo images", unit="img", disable=not progress)
    results = []
    if workers > 1:
        # spawn: safe even when the parent process has started threads (torch, BLAS).
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for res in pool.imap(_render_task, tasks, chunksize=4):
                results.append(res)
                bar.update()
    else:
        for task in tasks:
            results.append(_render_task(task))
            bar.update()
    bar.close()
    return results


def expected_names(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """The train and test image names ``generate_demo(cfg)`` writes (sorted)."""
    train_ids, test_ids = car_ids(cfg)
    angles = range(1, ANGLES + 1)
    return (
        [f"{c}_{a:02d}.jpg" for c in train_ids for a in angles],
        [f"{c}_{a:02d}.jpg" for c in test_ids for a in angles],
    )
