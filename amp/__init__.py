"""AMP-type iterations on data: GAMP for the (sequence) multi-index model, low-rank AMP for spiked
matrices, (G)VAMP for rotationally invariant designs; teacher-student and spiked instances."""
from amp.gamp import DivergenceWarning, gamp
from amp.instances import Instance, geometric_spectrum, teacher_student
from amp.lowrank import lowrank
from amp.results import IterationResult
from amp.spiked import SpikedWigner, SpikedWishart, spiked_wigner, spiked_wishart
from amp.vamp import vamp

__all__ = ["gamp", "lowrank", "vamp", "teacher_student", "spiked_wigner", "spiked_wishart", "geometric_spectrum",
           "Instance", "SpikedWigner", "SpikedWishart", "IterationResult", "DivergenceWarning"]
__version__ = "0.1.0"
