"""State evolution: per-iteration predictions of AMP-type iterations, computed with the very
denoiser objects the iterations use."""
from state_evolution.bayes_optimal import BayesOptimalResult, bayes_optimal
from state_evolution.gamp import gamp
from state_evolution.integrate import Nodes, input_expectation, output_expectation

__all__ = ["gamp", "bayes_optimal", "BayesOptimalResult", "Nodes", "input_expectation", "output_expectation"]
