"""Converters from public datasets' own layouts to the formats MMAL's configs read.

One module per dataset (import it directly, e.g.
``from mmal.datasets.converters.neu_det import convert_neu_det``); the
command-line wrappers are in ``tools/dataset_converters/``.
"""
