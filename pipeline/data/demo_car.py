"""The demo's cars: identities, makes and proportions, and each car as a list of flat faces.

A car is a small 3-D model (a convex body prism, a cabin with windows and pillars, four wheels
with rims, lights, grille, plate, door lines) in car coordinates (metres; x forward, y left,
z up). Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, car), so the
same seed gives the same car. :mod:`pipeline.data.demo_render` draws it; :mod:`pipeline.data.demo`
writes the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import DemoConfig

# fmt: off
# (make, model, body type): body types set the car's proportions.
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


