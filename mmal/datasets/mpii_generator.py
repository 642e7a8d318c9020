"""Synthetic articulated figures written in the MPII on-disk format.

The layout is mmpose's ``data/mpii``: ``images/*.jpg`` (numeric names),
``annotations/mpii_train.json`` and ``mpii_val.json`` (one record per
annotated person, exactly the fields of the real files) and
``annotations/mpii_gt_val.mat`` (the headbox file, with the arrays of the
real one), so mmpose's ``MpiiDataset`` reads it and ``MpiiPCKAccuracy``
scores it (PCKh) unchanged. See :mod:`mmal.datasets.mpii_format`.

Each figure is a stick-and-capsule body with the 16 MPII joints, limb
lengths in human proportions (thigh and shank 0.245, upper arm 0.186,
forearm 0.146, torso 0.30, head 0.13 of the standing height), facing the
camera (its right side on the image's left, as MPII's left/right and
mmpose's flip pairs expect). Each image draws a difficulty ``d`` in [0, 1]
that drives pose range (joint angles, torso lean, in-plane rotation,
foreshortening), person size, truncation at the image border, clutter and
limb-like distractors, occluders, a second person, contrast, blur and noise.

As in MPII, joints outside the image are not annotated (``joints_vis`` 0,
``[-1, -1]``), nor are about half of the joints hidden by an occluder or
another person; joints inside the image but outside the 1.25x person crop
stay annotated and are weighted out by mmpose's target encoding. Every image
is generated from ``(seed, index)`` alone; ``mmal_meta.json`` records the
difficulty of every record.
"""
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .mpii_format import MPII_JOINTS, write_mpii_headboxes, write_mpii_json
from .scene import (
    degrade,
    draw_clutter,
    render_maybe_duplicate,
    reuse_or_refuse,
    textured_background,
    write_atomically,
)

# Joint indices (MPII order).
R_ANK, R_KNE, R_HIP, L_HIP, L_KNE, L_ANK, PELVIS, THORAX, NECK, HEAD_TOP, \
    R_WRI, R_ELB, R_SHO, L_SHO, L_ELB, L_WRI = range(16)

#: Segment lengths as fractions of the standing height H (Drillis & Contini
#: style anthropometry; ankle to head top is 0.97 H).
PROPORTIONS = dict(thigh=0.245, shank=0.245, upper_arm=0.186, forearm=0.146, torso=0.30,
                   neck=0.05, head=0.13, hip_half_width=0.095, shoulder_half_width=0.125)
#: ``scale`` (person height / 200 px) is 0.9 H / 200: the 1.25x crop that
#: mmpose cuts around a standing figure is 1.125 H tall.
SCALE_PER_HEIGHT = 0.9
#: Head box side per head length: makes 0.6 x diagonal (the PCKh unit)
#: 0.14 of ``scale * 200``, as for the real MPII annotations.
HEADBOX_PER_HEAD = 1.15
#: Fewer annotated joints than this and the person is left unannotated.
MIN_ANNOTATED_JOINTS = 4


@dataclass(frozen=True)
class MPIISceneConfig:
    """Parameters of the generated MPII-format dataset.

    Attributes:
        num_train (int): Images of ``mpii_train.json`` (the pool). Each has
            one or two annotated persons.
        num_val (int): Images of ``mpii_val.json``.
        seed (int): Seed of the whole set.
        min_size (int): Smallest image side in pixels.
        max_size (int): Largest image side in pixels.
        second_person_prob (float): Chance of a second figure in an image.
        duplicate_fraction (float): Share of the training images that are
            near-duplicates of ``num_templates`` easy scenes (see
            :func:`~mmal.datasets.scene.near_duplicate_template`).
        num_templates (int): Easy scenes the duplicates copy.
    """

    num_train: int = 600
    num_val: int = 200
    seed: int = 0
    min_size: int = 160
    max_size: int = 224
    second_person_prob: float = 0.3
    duplicate_fraction: float = 0.35
    num_templates: int = 10


def generate_mpii_dataset(root: str | os.PathLike,
                          cfg: MPIISceneConfig = MPIISceneConfig()) -> Path:
    """Write the dataset to ``root`` (mmpose's ``data/mpii`` layout).

    The set is written to a temporary folder next to ``root`` and renamed
    into place, so an interrupted run never leaves a half-written dataset.
    An identical set already at ``root`` is kept.

    Returns:
        Path: ``root``.
    """
    if cfg.num_train < 1 or cfg.num_val < 1:
        raise ValueError(f'num_train={cfg.num_train} and num_val={cfg.num_val} must both '
                         'be >= 1')
    if not 64 <= cfg.min_size <= cfg.max_size:
        raise ValueError(f'need 64 <= min_size ({cfg.min_size}) <= max_size ({cfg.max_size})')
    if not 0 <= cfg.second_person_prob <= 1:
        raise ValueError(f'second_person_prob={cfg.second_person_prob} must be in [0, 1]')
    if not 0 <= cfg.duplicate_fraction < 1 or cfg.num_templates < 1:
        raise ValueError(f'need 0 <= duplicate_fraction ({cfg.duplicate_fraction}) < 1 and '
                         f'num_templates ({cfg.num_templates}) >= 1')
    root = Path(root)
    if reuse_or_refuse(root, asdict(cfg)):
        return root

    def fill(tmp: Path) -> None:
        (tmp / 'images').mkdir()
        (tmp / 'annotations').mkdir()
        splits: dict[str, list] = {'train': [], 'val': []}
        headboxes = []
        meta: dict[str, list] = {'train': [], 'val': []}
        for index in range(cfg.num_train + cfg.num_val):
            split = 'train' if index < cfg.num_train else 'val'
            image_name = f'{index + 1:09d}.jpg'
            image, persons, d, template = render_maybe_duplicate(
                render_image, cfg, index, in_pool=split == 'train')
            cv2.imwrite(str(tmp / 'images' / image_name), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            for k, person in enumerate(persons):
                splits[split].append(dict(person['record'], image=image_name))
                meta[split].append(dict(image=image_name, person=k, difficulty=round(d, 4),
                                        annotated=int(sum(person['record']['joints_vis'])),
                                        near_duplicate_of=template))
                if split == 'val':
                    headboxes.append(person['headbox'])
        write_mpii_json(tmp / 'annotations' / 'mpii_train.json', splits['train'])
        write_mpii_json(tmp / 'annotations' / 'mpii_val.json', splits['val'])
        write_mpii_headboxes(tmp / 'annotations' / 'mpii_gt_val.mat', splits['val'], headboxes)
        (tmp / 'mmal_meta.json').write_text(json.dumps(
            dict(config=asdict(cfg), joints=MPII_JOINTS, records=meta), indent=1))

    return write_atomically(root, fill)


def render_image(cfg: MPIISceneConfig, index: int, difficulty: float | None = None
                 ) -> tuple[np.ndarray, list[dict], float]:
    """Draw image ``index``: the BGR image, its annotated persons, its difficulty.

    Each person is ``dict(record=..., headbox=[[x1, y1], [x2, y2]])`` with
    the MPII record fields but ``image`` (coordinates 1-based, as MPII).
    ``difficulty`` overrides the drawn one (near-duplicate templates are easy).
    """
    rng = np.random.default_rng([cfg.seed, index])
    drawn = float(rng.uniform())
    d = drawn if difficulty is None else difficulty
    w, h = (int(v) for v in rng.integers(cfg.min_size, cfg.max_size + 1, size=2))
    image = textured_background(rng, h, w, contrast=1.0 - 0.5 * d)
    draw_clutter(rng, image, count=int(round(d * 10)), capsule_share=0.4)
    owner = np.full((h, w), -1, np.int16)   # which figure a pixel shows
    figures = [_sample_figure(rng, d, w, h)]
    if rng.uniform() < cfg.second_person_prob:
        figures.append(_sample_figure(rng, d, w, h, near=figures[0]))
    coverage = []
    for k, fig in enumerate(figures):
        mask = np.zeros((h, w), np.uint8)
        _draw_figure(rng, image, mask, fig)
        owner[mask > 0] = k
        coverage.append(_joint_coverage(mask > 0, fig))
    for _ in range(int(rng.binomial(3, 0.45 * d))):
        target = figures[int(rng.integers(len(figures)))]
        _occluder(rng, image, owner, target)
    image = degrade(rng, image, d, max_noise=22.0)
    persons = []
    for k, fig in enumerate(figures):
        after = _joint_coverage(owner == k, fig)
        joints, vis = [], []
        for j, (x, y) in enumerate(fig['joints']):
            inside = 0 <= x <= w - 1 and 0 <= y <= h - 1
            hidden = coverage[k][j] > 0 and after[j] < 0.35 * coverage[k][j]
            # MPII annotators click joints in the image, occluded ones mostly too.
            annotated = inside and not (hidden and rng.uniform() < 0.5)
            vis.append(int(annotated))
            joints.append([round(float(x) + 1, 4), round(float(y) + 1, 4)] if annotated
                          else [-1.0, -1.0])
        if sum(vis) < MIN_ANNOTATED_JOINTS:
            continue
        scale = SCALE_PER_HEIGHT * fig['height'] / 200
        cx, cy = fig['center']
        record = dict(joints_vis=vis, joints=joints, scale=round(scale, 6),
                      # mmpose moves MPII centres down by 15 * scale px and to 0-based
                      center=[round(cx + 1, 2), round(cy + 1 - 15 * scale, 2)])
        persons.append(dict(record=record, headbox=fig['headbox']))
    return image, persons, d


# ---------------------------------------------------------------- the figure
def _sample_figure(rng: np.random.Generator, d: float, w: int, h: int,
                   near: dict | None = None) -> dict:
    """Joint positions (0-based px), height, crop centre and head box of one figure."""
    p = PROPORTIONS
    side = min(w, h)
    height = side * rng.uniform(0.55, 0.85) * (1.0 - 0.35 * d * rng.uniform())
    if near is not None:
        height = near['height'] * rng.uniform(0.75, 1.15)

    def u(scale: float = 1.0) -> float:  # symmetric spread that grows with d
        return d * scale * rng.uniform(-1, 1)

    def shorten() -> float:  # out-of-plane foreshortening
        return 1.0 - 0.5 * d * rng.uniform() ** 2

    def along(angle_deg: float) -> np.ndarray:  # 0 points down, + turns to image right
        a = math.radians(angle_deg)
        return np.array([math.sin(a), math.cos(a)])

    j = np.zeros((16, 2))
    lean = rng.normal(0, 4) + u(35)
    torso_dir = -along(lean)  # pelvis -> thorax, pointing up
    perp = np.array([-torso_dir[1], torso_dir[0]])  # towards the figure's left (image right)
    j[THORAX] = j[PELVIS] + p['torso'] * height * shorten() * torso_dir
    head_dir = -along(lean + rng.normal(0, 4) + u(30))
    j[NECK] = j[THORAX] + p['neck'] * height * head_dir
    j[HEAD_TOP] = j[NECK] + p['head'] * height * head_dir
    j[R_HIP] = j[PELVIS] - p['hip_half_width'] * height * perp
    j[L_HIP] = j[PELVIS] + p['hip_half_width'] * height * perp
    j[R_SHO] = j[THORAX] - p['shoulder_half_width'] * height * perp
    j[L_SHO] = j[THORAX] + p['shoulder_half_width'] * height * perp
    for hip, knee, ankle, sign in ((R_HIP, R_KNE, R_ANK, -1), (L_HIP, L_KNE, L_ANK, 1)):
        thigh = sign * (6 + abs(rng.normal(0, 4))) + u(75)
        bend = rng.choice([-1, 1]) * (abs(rng.normal(0, 5)) + d * rng.uniform() * 110)
        j[knee] = j[hip] + p['thigh'] * height * shorten() * along(thigh)
        j[ankle] = j[knee] + p['shank'] * height * shorten() * along(thigh + bend)
    for sho, elb, wri, sign in ((R_SHO, R_ELB, R_WRI, -1), (L_SHO, L_ELB, L_WRI, 1)):
        arm = lean + sign * (12 + abs(rng.normal(0, 8))) + u(160)
        bend = rng.choice([-1, 1]) * (abs(rng.normal(0, 10)) + d * rng.uniform() * 140)
        j[elb] = j[sho] + p['upper_arm'] * height * shorten() * along(arm)
        j[wri] = j[elb] + p['forearm'] * height * shorten() * along(arm + bend)
    # In-plane rotation about the pelvis (keeps the figure's chirality).
    rot = math.radians(rng.normal(0, 3) + u(70) * (d > 0.5))
    r = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    j = j @ r.T
    # Placement: pelvis inside the image; harder scenes let the figure leave it.
    lo, hi = j.min(0), j.max(0)
    margin = (0.04 - 0.35 * d * rng.uniform()) * height
    if near is not None:
        pos = near['joints'][PELVIS] + rng.normal(0, 0.45, size=2) * height
    else:
        pos = np.array([rng.uniform(margin - lo[0], w - margin - hi[0]) if
                        w - hi[0] + lo[0] > 2 * margin else (w - hi[0] - lo[0]) / 2,
                        rng.uniform(margin - lo[1], h - margin - hi[1]) if
                        h - hi[1] + lo[1] > 2 * margin else (h - hi[1] - lo[1]) / 2])
    j = j + pos
    lo, hi = j.min(0), j.max(0)
    center = (lo + hi) / 2 + rng.normal(0, 0.02 + 0.03 * d, size=2) * height
    head_len = p['head'] * height
    head_c = (j[NECK] + j[HEAD_TOP]) / 2
    half = HEADBOX_PER_HEAD * head_len / 2
    headbox = [[float(head_c[0] - half + 1), float(head_c[1] - half + 1)],
               [float(head_c[0] + half + 1), float(head_c[1] + half + 1)]]
    return dict(joints=j, height=float(height), center=center, headbox=headbox)


def _draw_figure(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                 fig: dict) -> None:
    j = fig['joints']
    height = fig['height']
    shirt = rng.integers(30, 240, size=3)
    pants = rng.integers(20, 220, size=3)
    skin = np.array([rng.uniform(60, 140), rng.uniform(110, 190), rng.uniform(160, 235)])
    shoe = rng.integers(0, 90, size=3)

    def col(c, f=1.0):
        return tuple(int(v) for v in np.clip(np.asarray(c) * f, 0, 255))

    def pt(x):
        return (int(round(x[0] * 16)), int(round(x[1] * 16)))  # 4 bits of sub-pixel shift

    def limb(a, b, thick, color):
        t = max(2, int(round(thick * height)))
        for canvas, c, extra in ((image, col(color, 0.45), 2), (image, col(color), 0),
                                 (mask, 255, 0)):
            cv2.line(canvas, pt(a), pt(b), c, t + extra, cv2.LINE_AA, shift=4)

    def disc(c, radius, color):
        rad = max(2, int(round(radius * height * 16)))
        for canvas, colour in ((image, col(color)), (mask, 255)):
            cv2.circle(canvas, pt(c), rad, colour, -1, cv2.LINE_AA, shift=4)

    for hip, knee, ankle in ((R_HIP, R_KNE, R_ANK), (L_HIP, L_KNE, L_ANK)):
        limb(j[hip], j[knee], 0.085, pants)
        limb(j[knee], j[ankle], 0.07, col(pants, 0.8))
        disc(j[ankle], 0.035, shoe)
    torso = np.array([j[R_SHO], j[L_SHO], j[L_HIP], j[R_HIP]])
    poly = (torso * 16).round().astype(np.int32)
    cv2.fillPoly(image, [poly], col(shirt), cv2.LINE_AA, shift=4)
    cv2.polylines(image, [poly], True, col(shirt, 0.45), 2, cv2.LINE_AA, shift=4)
    cv2.fillPoly(mask, [poly], 255, shift=4)
    limb(j[THORAX], j[NECK], 0.05, skin)
    head_c = (j[NECK] + j[HEAD_TOP]) / 2
    head_r = np.linalg.norm(j[HEAD_TOP] - j[NECK]) / 2 / height
    disc(head_c, head_r, skin)
    up = (j[HEAD_TOP] - j[NECK]) / max(1e-6, np.linalg.norm(j[HEAD_TOP] - j[NECK]))
    across = np.array([up[1], -up[0]])
    hair = rng.integers(0, 120, size=3)
    cv2.ellipse(image, pt(head_c + up * head_r * height * 0.35),
                (int(head_r * height * 16), int(head_r * height * 16 * 0.6)),
                math.degrees(math.atan2(across[1], across[0])), 0, 180, col(hair), -1,
                cv2.LINE_AA, shift=4)
    for s in (-1, 1):  # eyes: the figure faces the camera
        eye = head_c + 0.1 * up * head_r * height + s * 0.38 * across * head_r * height
        cv2.circle(image, pt(eye), max(16, int(0.12 * head_r * height * 16)), (20, 20, 20),
                   -1, cv2.LINE_AA, shift=4)
    for sho, elb, wri in ((R_SHO, R_ELB, R_WRI), (L_SHO, L_ELB, L_WRI)):
        limb(j[sho], j[elb], 0.06, col(shirt, 0.85))
        limb(j[elb], j[wri], 0.05, skin)
        disc(j[wri], 0.03, col(skin, 0.9))


def _joint_coverage(mask: np.ndarray, fig: dict) -> list[float]:
    """Share of a small disc around each joint that shows the figure."""
    h, w = mask.shape
    r = max(1, int(round(0.03 * fig['height'])))
    out = []
    for x, y in fig['joints']:
        xi, yi = int(round(x)), int(round(y))
        x0, x1, y0, y1 = max(0, xi - r), min(w, xi + r + 1), max(0, yi - r), min(h, yi + r + 1)
        out.append(float(mask[y0:y1, x0:x1].mean()) if x1 > x0 and y1 > y0 else 0.0)
    return out


def _occluder(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray,
              fig: dict) -> None:
    h, w = image.shape[:2]
    c = fig['joints'][int(rng.integers(16))] + rng.normal(0, 0.05, size=2) * fig['height']
    size = fig['height'] * rng.uniform(0.12, 0.35)
    color = tuple(int(v) for v in rng.integers(0, 256, size=3))
    mask = np.zeros((h, w), np.uint8)
    if rng.uniform() < 0.5:
        half = np.array([size * rng.uniform(0.4, 1.0), size * rng.uniform(0.4, 1.0)])
        p0, p1 = (c - half).round().astype(int), (c + half).round().astype(int)
        for canvas, colour in ((image, color), (mask, 255)):
            cv2.rectangle(canvas, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                          colour, -1)
    else:
        axes = (int(size * rng.uniform(0.4, 0.9)), int(size * rng.uniform(0.3, 0.7)))
        for canvas, colour in ((image, color), (mask, 255)):
            cv2.ellipse(canvas, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)),
                        0, 360, colour, -1)
    owner[mask > 0] = -2
