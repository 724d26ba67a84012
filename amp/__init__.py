"""AMP-type iterations on data: GAMP for the (sequence) multi-index model, teacher-student instances."""
from amp.gamp import DivergenceWarning, gamp
from amp.instances import Instance, teacher_student
from amp.results import IterationResult

__all__ = ["gamp", "teacher_student", "Instance", "IterationResult", "DivergenceWarning"]
__version__ = "0.1.0"
