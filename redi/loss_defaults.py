"""Default hyperparameters of the losses: one source, read by the library, the trainer, the
bench and the reports. Where each comes from: ``docs/recipe.md``.

* ``REDI_ALPHA``: weight of the negative term, ``L = -n(y_w) + alpha n(y_l)``; the paper's
  default and its best setting (0 = SFT on the positives, 1 = the symmetric objective).
* ``REDI_CHOSEN_COEF``: weight of the positive term (1 in the paper).
* ``DPO_BETA``: the library's default DPO temperature (0.1, the usual DPO default); the
  paper's best Stage-2 DPO run on its data used 0.001 (``recipes/*_dpo.yaml``).
* ``SIMPO_BETA``, ``SIMPO_GAMMA``: SimPO's reward scale and margin (the paper's best: 2, 1).
"""

REDI_ALPHA = 0.8
REDI_CHOSEN_COEF = 1.0
DPO_BETA = 0.1
SIMPO_BETA = 2.0
SIMPO_GAMMA = 1.0
