"""Probes of trained circuits, for any rule: the loss's curvature with respect to the forward
weights (``curvature``), 2-D loss landscapes (``landscape``), the weight trajectory's principal
components (``trajectory``), and accuracy under input corruptions and adversarial attacks
(``robustness``). They sit above ``circuits`` (they read run directories and compiled circuits)
and nothing in ``circuits`` imports them. Command line: ``python -m probes RUN_DIR ... --out DIR``.
"""
