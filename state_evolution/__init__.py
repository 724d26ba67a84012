"""State evolution: per-iteration predictions of AMP-type iterations, computed with the very
denoiser objects the iterations use."""
from state_evolution.bayes_optimal import BayesOptimalResult, bayes_optimal
from state_evolution.erm import ERMCurve, ERMResult, erm, erm_curve
from state_evolution.gamp import gamp
from state_evolution.integrate import Nodes, input_expectation, output_expectation
from state_evolution.lowrank import lowrank, lowrank_bayes_optimal
from state_evolution.vamp import vamp

__all__ = ["gamp", "bayes_optimal", "BayesOptimalResult", "erm", "erm_curve", "ERMResult", "ERMCurve",
           "lowrank", "lowrank_bayes_optimal", "vamp", "Nodes", "input_expectation", "output_expectation"]
