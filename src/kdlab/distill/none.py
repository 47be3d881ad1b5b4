"""`none`: the pure baseline, cross-entropy only (with the student's label smoothing)."""

from kdlab.distill.base import Distiller, register


@register("none")
class NoDistillation(Distiller):
    """No KD term: loss = CE. kd.alpha is ignored; no teacher is loaded."""

    needs_teacher = False

    def loss(self, student, teacher, batch):
        raise RuntimeError("the pure baseline has no KD term")
