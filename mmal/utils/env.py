"""What software a result was computed with."""
import importlib.metadata as md

#: The distributions whose versions decide an experiment's numbers. An
#: experiment records them in ``al_state.json`` (``versions``) and every rank
#: must run the same ones, so a name added here is a new key in that record.
PACKAGES = ('mmal', 'torch', 'mmengine', 'mmcv', 'mmdet', 'mmpose')


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES`, ``None`` if not installed.

    The installed distribution's metadata is read, not ``module.__version__``:
    it needs no import (mmcv's compiled ops, mmpose's registries), and a
    package that is not installed is ``None`` rather than an error.

    Returns:
        dict: ``{'mmal': '0.1.0', 'torch': '2.1.0', ...}`` in :data:`PACKAGES` order.
    """
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out
