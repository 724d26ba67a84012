"""Pluggable denoisers: priors and penalties on the weights, channels and losses on the outputs.

See `denoisers.base` for the two protocols a new denoiser implements.
"""
from denoisers.base import InputDenoiser, OutputDenoiser
from denoisers.channels import Abs, Door, Linear, ReLU, ScalarChannel, Sign
from denoisers.priors import BernoulliGauss, Gaussian, GaussMixture, Rademacher

__all__ = [
    "InputDenoiser", "OutputDenoiser", "ScalarChannel",
    "Gaussian", "Rademacher", "BernoulliGauss", "GaussMixture",
    "Linear", "Sign", "ReLU", "Abs", "Door",
]
