"""lwroi: layer-weighted ROI-wise encoding models of fMRI responses to videos.

Kept import-light on purpose: ``import lwroi.data`` must not pull in torch or mpi4py.
"""

__version__ = "0.1.0"
