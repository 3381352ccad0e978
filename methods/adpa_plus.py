"""ADPA+ (Gao et al. 2025, "Advantage-Guided Distillation for Preference Alignment in Small Language Models",
ICLR 2025): ADPA (eq. 10, see methods/adpa.py) initialised from the DCKD student of the same pair, dataset and
seed ("run:dckd", built and cached by the pipeline), with the student rollouts ŝ drawn from that DCKD student
(side "gen:run:dckd") instead of the SFT student. Every ADPA setting, option and variant applies unchanged;
state_source="student" means the DCKD student's rollouts.
"""
from __future__ import annotations

from methods.adpa import ADPA


class ADPAPlus(ADPA):
    """ADPA+: ADPA started from the DCKD student, on the DCKD student's rollouts."""

    name = "adpa_plus"
    display_name = "ADPA+"
    citation = "Gao et al. 2025 (ADPA paper, ICLR 2025), ADPA+ = DCKD then ADPA"
    student_rollouts = "gen:run:dckd"

    def init_from(self, cfg) -> str:
        return "run:dckd"
