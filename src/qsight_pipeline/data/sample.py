"""Synthetic colour fundus photographs with grade-dependent diabetic-retinopathy lesions.

Each picture has a dark surround, a round orange-red field with vignetting and a choroidal
texture, a darker macula, an optic disc with a pale cup, and a branching tree of arteries and
veins that leave the disc and arch around the macula. Lesions follow the clinical grades, in
number and in size:

- grade 1 (mild): a few microaneurysms;
- grade 2 (moderate): more microaneurysms, dot and blot haemorrhages, hard exudates, cotton-wool spots;
- grade 3 (severe): many haemorrhages in every quadrant, exudate rings, several cotton-wool spots;
- grade 4 (proliferative): as severe, plus new vessels at the disc and elsewhere, fibrous tissue
  and sometimes a pre-retinal haemorrhage.

Both eyes of a patient share one vessel tree (mirrored, as anatomy is) and have the same or an
adjacent grade. Everything is drawn from ``numpy.random.SeedSequence(seed)``, so a seed gives the
same files byte for byte.

Command line (also installed as ``qsight-sample``)::

    python -m qsight_pipeline.data.sample --layout tanlikesmath --out data/01_raw/sample \
        --patients 150 --seed 0 --size 256
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from qsight_pipeline.constants import NUM_GRADES
from qsight_pipeline.data.layouts import (
    RECORD_COLUMNS,
    TANLIKESMATH,
    SampleImage,
    get_layout,
    layout_names,
)
from qsight_pipeline.data.layouts.sovitrath import (
    gaussian_filtered as gaussian_filtered,  # re-exported
)

logger = logging.getLogger(__name__)

# Share of patients per worst-eye grade. Real screening data are ~73% grade 0 with only ~2% each
# of grades 3 and 4; the sample keeps grade 0 the most common but has enough severe and
# proliferative eyes for a small model to learn them.
PATIENT_GRADE_WEIGHTS: tuple[float, ...] = (0.50, 0.13, 0.21, 0.08, 0.08)
SAME_GRADE_BOTH_EYES = 0.6
SUPERSAMPLE = 2  # draw at twice the size, then downsample: smooth edges on thin vessels


# --- anatomy --------------------------------------------------------------------------------------


@dataclass
class Vessel:
    points: list[tuple[float, float]]  # in field units: the field is the unit disc, y points down
    widths: list[float]
    vein: bool


@dataclass
class Anatomy:
    """What both eyes of one patient share (drawn for a right eye; the left eye is mirrored)."""

    disc: tuple[float, float]
    disc_radius: float
    macula: tuple[float, float]
    albedo: tuple[float, float, float]
    vessels: list[Vessel]
    texture_seed: int


def make_anatomy(rng: np.random.Generator) -> Anatomy:
    disc = (0.32 + rng.normal(0, 0.02), rng.normal(0, 0.04))
    macula = (disc[0] - 0.62 + rng.normal(0, 0.02), disc[1] + 0.06 + rng.normal(0, 0.02))
    red = rng.uniform(0.72, 0.92)
    albedo = (red, red * rng.uniform(0.30, 0.42), red * rng.uniform(0.08, 0.16))
    vessels: list[Vessel] = []
    # (start angle, turn per unit length, length): temporal arcades arch around the macula,
    # nasal vessels run out almost straight. Angles in degrees, y down, 180 = temporal.
    trunks = [(-105, -95, 1.25), (105, 95, 1.25), (-55, 30, 0.75), (55, -30, 0.75)]
    for angle, turn, length in trunks:
        for vein, offset, width in ((True, 7, 0.024), (False, -7, 0.018)):
            jitter = rng.normal(0, 6)
            sprout = _Sprout(
                disc, math.radians(angle + offset + jitter), math.radians(turn),
                length * rng.uniform(0.9, 1.1), width * rng.uniform(0.9, 1.1),
            )
            _grow_vessel(rng, vessels, sprout, vein, depth=0)
    # Small vessels that run from the disc straight towards the macula.
    for _ in range(2):
        sprout = _Sprout(disc, math.radians(180 + rng.normal(0, 12)), 0.0, 0.3, 0.009)
        _grow_vessel(rng, vessels, sprout, bool(rng.integers(2)), depth=2)
    return Anatomy(
        disc=disc,
        disc_radius=rng.uniform(0.11, 0.13),
        macula=macula,
        albedo=albedo,
        vessels=vessels,
        texture_seed=int(rng.integers(2**31)),
    )


class _Sprout(NamedTuple):
    """Where a vessel starts, its heading and curvature (radians, per unit length), its length
    and its starting width (field units)."""

    start: tuple[float, float]
    angle: float
    turn: float
    length: float
    width: float


def _grow_vessel(
    rng: np.random.Generator, vessels: list[Vessel], sprout: _Sprout, vein: bool, depth: int
) -> None:
    step = 0.012
    (x, y), angle, turn, length, width = sprout
    points, widths = [(x, y)], [width]
    steps = max(2, int(length / step))
    for i in range(steps):
        angle += turn * step + rng.normal(0, 0.06)
        x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        if x * x + y * y > 1.05:
            break
        current = width * (1 - 0.55 * i / steps)
        points.append((x, y))
        widths.append(current)
        if depth < 3 and i > 3 and rng.random() < 0.05:
            side = rng.choice((-1, 1))
            branch = _Sprout(
                (x, y), angle + side * math.radians(rng.uniform(25, 65)), rng.normal(0, 1.5),
                (steps - i) * step * rng.uniform(0.4, 0.8), current * rng.uniform(0.5, 0.7),
            )
            _grow_vessel(rng, vessels, branch, vein, depth + 1)
    vessels.append(Vessel(points, widths, vein))


# --- drawing --------------------------------------------------------------------------------------


class _Canvas:
    """Float RGB albedo of the field at the drawing resolution, with field<->pixel conversion."""

    def __init__(self, resolution: int, center: tuple[float, float], radius: float):
        self.resolution = resolution
        self.center = center
        self.radius = radius
        ys, xs = np.mgrid[0:resolution, 0:resolution].astype(np.float32)
        self.fx = (xs - center[0]) / radius  # field coordinates of every pixel
        self.fy = (ys - center[1]) / radius
        self.rgb = np.zeros((resolution, resolution, 3), dtype=np.float32)

    def pixel(self, point: tuple[float, float]) -> tuple[float, float]:
        return self.center[0] + point[0] * self.radius, self.center[1] + point[1] * self.radius

    def new_mask(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        mask = Image.new("L", (self.resolution, self.resolution), 0)
        return mask, ImageDraw.Draw(mask)

    def paint(self, mask: Image.Image, colour, opacity: float, blur: float = 0.0) -> None:
        if blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(blur))
        alpha = np.asarray(mask, dtype=np.float32)[..., None] * (opacity / 255.0)
        self.rgb *= 1 - alpha
        self.rgb += alpha * np.asarray(colour, dtype=np.float32)

    def blob(self, draw: ImageDraw.ImageDraw, point, radius: float, elongation=1.0, angle=0.0):
        """An ellipse of ``radius`` field units, stretched by ``elongation`` along ``angle``."""
        cx, cy = self.pixel(point)
        a, b = radius * self.radius * elongation, radius * self.radius
        if a < 1.5 and b < 1.5:
            draw.ellipse((cx - a, cy - b, cx + a, cy + b), fill=255)
            return
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        xs = cx + a * np.cos(t) * math.cos(angle) - b * np.sin(t) * math.sin(angle)
        ys = cy + a * np.cos(t) * math.sin(angle) + b * np.sin(t) * math.cos(angle)
        draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255)


def _smooth_noise(rng: np.random.Generator, resolution: int, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((resolution, resolution), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def draw_fundus(
    anatomy: Anatomy, grade: int, eye: str, size: int, rng: np.random.Generator
) -> Image.Image:
    """One RGB fundus photograph of ``size`` x ``size`` pixels."""
    resolution = size * SUPERSAMPLE
    center = (resolution / 2 + rng.normal(0, resolution * 0.01), resolution / 2 + rng.normal(0, resolution * 0.01))
    radius = resolution * rng.uniform(0.45, 0.48)
    exposure = rng.uniform(0.85, 1.1)
    cup = rng.uniform(0.35, 0.5)
    canvas = _Canvas(resolution, center, radius)
    dist2 = canvas.fx**2 + canvas.fy**2

    # Background albedo with a soft choroidal texture.
    texture_rng = np.random.default_rng(anatomy.texture_seed)
    texture = 1 + 0.07 * _smooth_noise(texture_rng, resolution, 10) + 0.03 * _smooth_noise(
        texture_rng, resolution, 40
    )
    canvas.rgb[:] = np.asarray(anatomy.albedo, dtype=np.float32) * texture[..., None]

    # Macula: darker and browner, with a faint foveal reflex.
    mx, my = anatomy.macula
    macula = np.exp(-((canvas.fx - mx) ** 2 + (canvas.fy - my) ** 2) / (2 * 0.13**2))
    canvas.rgb *= 1 - macula[..., None] * np.asarray((0.35, 0.45, 0.4), dtype=np.float32)

    # Optic disc: a pale yellow-pink rim with a brighter cup, slightly blurred edge.
    mask, draw = canvas.new_mask()
    canvas.blob(draw, anatomy.disc, anatomy.disc_radius, elongation=0.92, angle=math.pi / 2)
    canvas.paint(mask, (1.0, 0.78, 0.52), 0.92, blur=resolution * 0.004)
    mask, draw = canvas.new_mask()
    canvas.blob(draw, anatomy.disc, anatomy.disc_radius * cup)
    canvas.paint(mask, (1.0, 0.93, 0.78), 0.85, blur=resolution * 0.006)

    _draw_vessels(canvas, anatomy.vessels)
    # Lesions draw last from the generator, so one seed gives the same photograph at every grade
    # except for the lesions.
    lesion_rng = np.random.default_rng(rng.integers(2**63))
    sensor_noise = rng.normal(0, 0.004, (resolution, resolution, 3)).astype(np.float32)
    _draw_lesions(canvas, anatomy, grade, lesion_rng)

    # Camera: vignetting towards the rim, exposure jitter, and the dark surround.
    illumination = (1 - 0.6 * np.clip(dist2, 0, 1) ** 1.6) * exposure
    rgb = canvas.rgb * illumination[..., None]
    inside = np.clip((1.0 - np.sqrt(dist2)) * radius / 1.5, 0, 1)[..., None]
    rgb = rgb * inside + 0.015 * (1 - inside)
    rgb += sensor_noise
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    # Drawn as a right eye; the left eye is its mirror image (optic disc on the other side).
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if eye == "left" else image


def _draw_vessels(canvas: _Canvas, vessels: list[Vessel]) -> None:
    for vein in (False, True):  # veins on top, as they are wider and darker
        mask, draw = canvas.new_mask()
        for vessel in (v for v in vessels if v.vein == vein):
            pixels = [canvas.pixel(p) for p in vessel.points]
            for (a, b), width in zip(zip(pixels, pixels[1:], strict=False), vessel.widths[1:], strict=False):
                w = max(1.0, width * canvas.radius)
                draw.line((a, b), fill=255, width=round(w))
                r = w / 2
                draw.ellipse((b[0] - r, b[1] - r, b[0] + r, b[1] + r), fill=255)
        colour = (0.42, 0.06, 0.04) if vein else (0.62, 0.14, 0.07)
        canvas.paint(mask, colour, 0.85, blur=canvas.resolution * 0.0015)


def _lesion_site(rng: np.random.Generator, anatomy: Anatomy, spread: float = 0.42) -> tuple[float, float]:
    """A point in the posterior pole, away from the disc, where DR lesions cluster."""
    centre = ((anatomy.disc[0] + anatomy.macula[0]) / 2, anatomy.macula[1])
    while True:
        x, y = rng.normal(centre[0], spread), rng.normal(centre[1], spread)
        dx, dy = x - anatomy.disc[0], y - anatomy.disc[1]
        if x * x + y * y < 0.85**2 and dx * dx + dy * dy > (anatomy.disc_radius * 1.3) ** 2:
            return x, y


def _draw_lesions(canvas: _Canvas, anatomy: Anatomy, grade: int, rng: np.random.Generator) -> None:
    if grade == 0:
        return
    scale = 1 + 0.2 * (grade - 1)  # lesions grow with the grade as well as multiply
    counts = {
        #       microaneurysms, haemorrhages, exudate clusters, cotton-wool spots
        1: (rng.integers(5, 11), 0, 0, 0),
        2: (rng.integers(8, 15), rng.integers(4, 9), rng.integers(1, 3), rng.integers(0, 3)),
        3: (rng.integers(12, 20), rng.integers(16, 28), rng.integers(2, 4), rng.integers(2, 6)),
        4: (rng.integers(10, 18), rng.integers(12, 24), rng.integers(1, 4), rng.integers(1, 5)),
    }[grade]
    n_micro, n_haem, n_exudate_clusters, n_cotton = (int(c) for c in counts)

    # Hard exudates: small waxy yellow flecks in clusters and part-rings near the macula.
    mask, draw = canvas.new_mask()
    for _ in range(n_exudate_clusters):
        centre = _lesion_site(rng, anatomy, spread=0.25)
        ring = rng.uniform(0.03, 0.08) * scale
        for _ in range(rng.integers(6, 14)):
            theta = rng.uniform(0, 2 * np.pi)
            r = ring * rng.uniform(0.6, 1.2)
            point = (centre[0] + r * math.cos(theta), centre[1] + r * math.sin(theta))
            canvas.blob(draw, point, rng.uniform(0.008, 0.016) * scale, rng.uniform(1, 1.8), rng.uniform(0, np.pi))
    canvas.paint(mask, (1.0, 0.88, 0.42), 0.9, blur=canvas.resolution * 0.001)

    # Cotton-wool spots: pale, fluffy, along the arcades.
    mask, draw = canvas.new_mask()
    for _ in range(n_cotton):
        canvas.blob(draw, _lesion_site(rng, anatomy, 0.5), rng.uniform(0.035, 0.055) * scale, rng.uniform(1.1, 1.8), rng.uniform(0, np.pi))
    canvas.paint(mask, (0.96, 0.9, 0.8), 0.75, blur=canvas.resolution * 0.008)

    # Dot, blot and flame haemorrhages, and microaneurysms: dark red.
    mask, draw = canvas.new_mask()
    for _ in range(n_haem):
        site = _lesion_site(rng, anatomy, 0.5)
        if rng.random() < 0.3:  # flame-shaped
            canvas.blob(draw, site, rng.uniform(0.012, 0.02) * scale, rng.uniform(2.0, 3.0), rng.uniform(0, np.pi))
        else:  # dot or blot: a few overlapping ellipses
            for _ in range(rng.integers(1, 4)):
                jitter = (site[0] + rng.normal(0, 0.012), site[1] + rng.normal(0, 0.012))
                canvas.blob(draw, jitter, rng.uniform(0.018, 0.035) * scale, rng.uniform(1, 1.5), rng.uniform(0, np.pi))
    for _ in range(n_micro):
        canvas.blob(draw, _lesion_site(rng, anatomy), rng.uniform(0.011, 0.016) * scale)
    canvas.paint(mask, (0.36, 0.04, 0.03), 0.85, blur=canvas.resolution * 0.0015)

    if grade == 4:
        _draw_neovascularisation(canvas, anatomy, rng)


def _draw_neovascularisation(canvas: _Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Fine tortuous new-vessel tufts on the disc and elsewhere, fibrous veil, pre-retinal bleed."""
    sites = [anatomy.disc] + [_lesion_site(rng, anatomy, 0.5) for _ in range(rng.integers(1, 3))]
    fibrous, fibrous_draw = canvas.new_mask()
    vessels, vessel_draw = canvas.new_mask()
    for site in sites:
        spread = anatomy.disc_radius * rng.uniform(1.0, 1.4)
        canvas.blob(fibrous_draw, site, spread * 1.1)
        for _ in range(rng.integers(6, 10)):
            angle = rng.uniform(0, 2 * np.pi)
            x, y = site
            points = [canvas.pixel((x, y))]
            for _ in range(rng.integers(10, 18)):
                angle += rng.normal(0, 0.9)
                x, y = x + 0.014 * math.cos(angle), y + 0.014 * math.sin(angle)
                if (x - site[0]) ** 2 + (y - site[1]) ** 2 > spread**2:
                    angle += np.pi  # loops back into the tuft
                points.append(canvas.pixel((x, y)))
            vessel_draw.line(points, fill=255, width=max(1, round(0.007 * canvas.radius)), joint="curve")
    canvas.paint(fibrous, (0.95, 0.82, 0.7), 0.35, blur=canvas.resolution * 0.01)
    canvas.paint(vessels, (0.55, 0.05, 0.05), 0.9, blur=canvas.resolution * 0.001)
    if rng.random() < 0.5:  # boat-shaped pre-retinal haemorrhage below the arcade
        mask, draw = canvas.new_mask()
        site = _lesion_site(rng, anatomy, 0.45)
        canvas.blob(draw, site, rng.uniform(0.07, 0.11), rng.uniform(1.4, 2.0), rng.normal(0, 0.2))
        canvas.paint(mask, (0.38, 0.02, 0.02), 0.95, blur=canvas.resolution * 0.002)


# --- the data set ---------------------------------------------------------------------------------


def lesion_twins(seed: int, size: int, grade: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The same eye drawn without lesions (grade 0) and with those of ``grade``, as uint8 RGB."""
    anatomy = make_anatomy(np.random.default_rng(seed))
    return tuple(
        np.asarray(draw_fundus(anatomy, g, "right", size, np.random.default_rng(seed + 1000)))
        for g in (0, grade)
    )


def planted_lesion_eye(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A clean eye with its diseased twin's lesions in the left half only, and the lesion mask
    (the pixels where the twins differ, inside that half): ground truth for saliency maps."""
    clean, diseased = lesion_twins(seed, size)
    region = np.zeros(clean.shape[:2], dtype=bool)
    region[:, : size // 2] = True
    image = clean.copy()
    image[region] = diseased[region]
    lesions = region & (np.abs(diseased.astype(int) - clean.astype(int)).sum(axis=-1) > 30)
    return image, lesions


def patient_grades(patients: int, rng: np.random.Generator) -> np.ndarray:
    """Worst-eye grade per patient: every grade at least once (when there are >= 5 patients)."""
    base = min(1, patients // NUM_GRADES)
    counts = np.full(NUM_GRADES, base)
    remaining = patients - counts.sum()
    expected = remaining * np.asarray(PATIENT_GRADE_WEIGHTS)
    counts += np.floor(expected).astype(int)
    for grade in np.argsort(-(expected - np.floor(expected)), kind="stable")[: patients - counts.sum()]:
        counts[grade] += 1
    grades = np.repeat(np.arange(NUM_GRADES), counts)
    return grades[rng.permutation(len(grades))]


def _shifted_camera(image: Image.Image) -> Image.Image:
    """Another camera's look: a cooler, greener colour balance, a flatter tone curve and a
    softer lens. The field, the anatomy and the lesions are the same."""
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    rgb = (rgb * np.asarray((0.78, 1.12, 1.45), dtype=np.float32)).clip(0, 1) ** 0.8
    shifted = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), "RGB")
    return shifted.filter(ImageFilter.GaussianBlur(radius=image.size[0] / 256))


# The looks a sample can be photographed with: the bundled sample's, and a shifted camera's for
# testing how a model trained on the first transfers (``kedro run --pipelines evaluate``).
CAMERAS = {"bundled": None, "shifted": _shifted_camera}


@dataclass(frozen=True)
class Camera:
    """How the photographs are taken: their ``look`` (a key of :data:`CAMERAS`) and the JPEG
    quality of a layout that saves JPEG."""

    look: str = "bundled"
    jpeg_quality: int = 85


def generate_sample(
    out_dir: str | Path,
    layout: str = TANLIKESMATH,
    patients: int = 150,
    seed: int = 0,
    size: int = 256,
    camera: Camera = Camera(),  # noqa: B008 - frozen
) -> pd.DataFrame:
    """Write a synthetic data set in a registered dataset ``layout`` under ``out_dir``.

    ``camera``: ``Camera("shifted")`` photographs the same eyes through another camera.
    Returns one row per image with the columns ``image_id, patient_id, eye, grade, path``.
    """
    writer = get_layout(layout)
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if camera.look not in CAMERAS:
        raise ValueError(f"camera must be one of {', '.join(CAMERAS)}, got {camera.look!r}")
    through = CAMERAS[camera.look] or (lambda image: image)
    out_dir = Path(out_dir)
    root_sequence = np.random.SeedSequence(seed)
    layout_rng = np.random.default_rng(root_sequence.spawn(1)[0])
    grades = patient_grades(patients, layout_rng)
    patient_ids = 10 + np.cumsum(layout_rng.integers(1, 5, patients)) - 1

    rows = []
    for patient_id, worst, sequence in zip(patient_ids, grades, root_sequence.spawn(patients), strict=True):
        anatomy_seq, right_seq, left_seq, choice_seq = sequence.spawn(4)
        anatomy = make_anatomy(np.random.default_rng(anatomy_seq))
        choice = np.random.default_rng(choice_seq)
        other = worst if worst == 0 or choice.random() < SAME_GRADE_BOTH_EYES else worst - 1
        eye_grades = {"right": worst, "left": other} if choice.random() < 0.5 else {"right": other, "left": worst}
        for eye, eye_seq in (("left", left_seq), ("right", right_seq)):
            eye_rng = np.random.default_rng(eye_seq)
            grade = int(eye_grades[eye])
            image = through(draw_fundus(anatomy, grade, eye, size, eye_rng))
            sample = SampleImage(image, int(patient_id), eye, grade, eye_rng)
            rows.append(writer.write_sample_image(out_dir, sample, camera.jpeg_quality))

    table = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    writer.finish_sample(out_dir, table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="qsight-sample", description="Write a synthetic fundus data set in a Kaggle layout."
    )
    parser.add_argument("--layout", choices=layout_names(), default=TANLIKESMATH)
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write")
    parser.add_argument("--patients", type=int, default=150, help="two images per patient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="side of the square images in pixels")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality (tanlikesmath)")
    parser.add_argument("--camera", choices=list(CAMERAS), default="bundled",
                        help="shifted: the same eyes through another camera")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = generate_sample(args.out, args.layout, args.patients, args.seed, args.size,
                            Camera(args.camera, args.quality))
    per_grade = table["grade"].value_counts().reindex(range(NUM_GRADES), fill_value=0)
    logger.info(
        "Wrote %d %s images of %d patients to %s; images per grade 0..4: %s",
        len(table), args.layout, args.patients, args.out, ", ".join(map(str, per_grade.tolist())),
    )


if __name__ == "__main__":
    main()
