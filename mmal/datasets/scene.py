"""Pieces shared by the synthetic dataset generators.

Backgrounds, clutter and image degradation are what make one generated
image harder than another; the VOC and MPII generators draw them the same
way, each with its own strength, and write their sets the same way.
"""
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def textured_background(rng: np.random.Generator, h: int, w: int,
                        contrast: float) -> np.ndarray:
    """A colour gradient with blocky texture; ``contrast`` in (0, 1] flattens it."""
    base = rng.uniform(50, 210, size=3)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    slope = rng.uniform(-0.4, 0.4, size=(2, 3))
    image = base + gx[..., None] * slope[0] + gy[..., None] * slope[1]
    cell = int(rng.integers(4, 12))
    noise = rng.normal(0, 9, size=(h // cell + 1, w // cell + 1, 3))
    image += noise.repeat(cell, 0).repeat(cell, 1)[:h, :w]
    mean = image.mean()
    return np.clip(mean + (image - mean) * contrast, 0, 255).astype(np.uint8)


def draw_clutter(rng: np.random.Generator, image: np.ndarray, count: int,
                 capsule_share: float = 0.0) -> None:
    """Draw ``count`` distractors in place: lines, blobs and, for a share of
    them, limb-like capsules (distractors for limb detectors)."""
    h, w = image.shape[:2]
    for _ in range(count):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        p1 = np.array([rng.integers(w), rng.integers(h)])
        kind = rng.uniform()
        if kind < capsule_share:
            length = min(h, w) * rng.uniform(0.08, 0.2)
            a = rng.uniform(0, 2 * math.pi)
            p2 = p1 + length * np.array([math.cos(a), math.sin(a)])
            t = int(rng.integers(3, max(4, min(h, w) // 14)))
            dark = tuple(int(c * 0.45) for c in color)
            cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), dark, t + 2, cv2.LINE_AA)
            cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), color, t, cv2.LINE_AA)
        elif kind < capsule_share + (1 - capsule_share) / 2:
            p2 = np.array([rng.integers(w), rng.integers(h)])
            cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), color,
                     int(rng.integers(1, 4)))
        else:
            cv2.circle(image, tuple(map(int, p1)),
                       int(rng.integers(2, max(3, min(h, w) // 10))), color, -1)


def degrade(rng: np.random.Generator, image: np.ndarray, d: float,
            max_noise: float = 25.0) -> np.ndarray:
    """Blur hard images (``d`` > 0.6) and add Gaussian noise growing with ``d``."""
    out = image.astype(np.float32)
    if d > 0.6:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=0.5 + 1.2 * (d - 0.6))
    out += rng.normal(0, 3 + max_noise * d, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


#: Seeds of near-duplicate templates start here, far above any image index.
TEMPLATE_SEED_BASE = 10 ** 7
#: Templates are easy scenes: their difficulty lies in [0, this].
TEMPLATE_MAX_DIFFICULTY = 0.25


def near_duplicate_template(seed: int, index: int, fraction: float,
                            num_templates: int) -> int | None:
    """Which easy template pool image ``index`` nearly duplicates, or None.

    Real pools hold many near-identical easy scenes (video frames, burst
    shots, the same street at another minute): labeling a second copy
    teaches a detector almost nothing. A ``fraction`` of the pool is such
    copies of ``num_templates`` easy scenes, so a strategy that recognises
    what the model already knows has labels to save, and random sampling
    spends ``fraction`` of its budget on them.
    """
    if fraction <= 0 or num_templates < 1:
        return None
    rng = np.random.default_rng([seed, index, 7])
    if rng.uniform() >= fraction:
        return None
    return int(rng.integers(num_templates))


def template_difficulty(seed: int, template: int) -> float:
    """The (easy) difficulty of template ``template``."""
    rng = np.random.default_rng([seed, TEMPLATE_SEED_BASE + template, 1])
    return float(rng.uniform(0.0, TEMPLATE_MAX_DIFFICULTY))


def render_maybe_duplicate(render: Callable, cfg, index: int, in_pool: bool) -> tuple:
    """Image ``index`` drawn by ``render(cfg, index[, difficulty])``, or a near-duplicate.

    Pool images (``in_pool``) are near-duplicates of an easy template with
    the probability ``cfg.duplicate_fraction``: the template drawn at its
    easy difficulty, with :func:`jitter_copy` applied.

    Returns:
        tuple: What ``render`` returns, plus the template index (None for
        an image of its own).
    """
    template = near_duplicate_template(cfg.seed, index, cfg.duplicate_fraction,
                                       cfg.num_templates) if in_pool else None
    if template is None:
        return (*render(cfg, index), None)
    image, *rest = render(cfg, TEMPLATE_SEED_BASE + template,
                          difficulty=template_difficulty(cfg.seed, template))
    return (jitter_copy(np.random.default_rng([cfg.seed, index]), image), *rest, template)


def jitter_copy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A near-duplicate of ``image``: small brightness, contrast and sensor-noise changes.

    Geometry is untouched, so the template's annotations hold unchanged.
    """
    gain = rng.uniform(0.92, 1.08)
    bias = rng.uniform(-10, 10)
    noisy = image.astype(np.float32) * gain + bias + rng.normal(0, 3.0, size=image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def reuse_or_refuse(target: Path, config: dict) -> bool:
    """Whether ``target`` already holds a set generated with ``config``.

    Raises:
        FileExistsError: ``target`` holds other data, generated or not.
    """
    meta_file = target / 'mmal_meta.json'
    if meta_file.exists():
        existing = json.loads(meta_file.read_text()).get('config')
        if existing == config:
            return True
        raise FileExistsError(f'{target} holds a generated dataset with other settings '
                              f'({existing}); remove it or choose another root')
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f'{target} exists and was not written by this generator; '
                              'choose another root')
    return False


def write_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Let ``fill`` write a dataset into a temporary folder, then rename it to
    ``target``, so an interrupted run never leaves a half-written dataset."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{target.name}.', dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            target.rmdir()  # empty: reuse_or_refuse checked it
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
