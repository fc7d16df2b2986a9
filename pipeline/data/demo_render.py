"""The demo's studio renderer: a fixed pinhole camera, a z-buffer and a studio background.

Image ``<car>_<NN>.jpg`` shows the car turned by yaw = (NN - 1) * 22.5 degrees in front of a
fixed perspective camera, as on Carvana's turntable: 01 is the front, 05 a side, 09 the rear,
13 the other side. Faces are rasterised with a z-buffer, so the mask is exactly the set of
pixels the car's own faces cover; the studio (gradient wall, floor, horizon line, soft blurred
shadow under the car) is background and never in the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.data.demo_car import CarSpec, Face

# Fixed camera (the turntable rotates the car, not the camera).
CAMERA_DISTANCE = 9.0  # metres from the turntable centre
CAMERA_ELEVATION = math.radians(11.0)
CAMERA_TARGET_Z = 0.75  # the camera looks at this height above the turntable centre
REFERENCE_LENGTH = 4.6  # a car this long spans FILL_WIDTH of the image seen from the side
FILL_WIDTH = 0.78


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
