"""Labeling as a service, above the loop: which images to label next for a
checkpoint (``al_query``), and the serving queue that keeps a labeling tool
fed and retrains in the background (``al_serve``).

It uses the experiment's own pieces (the loop's Runner configs and
selection, :mod:`mmal.annotation` for the files), as :mod:`mmal.compare`
does; nothing below imports it.
"""
