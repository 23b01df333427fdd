"""What is computed from a trained model or its logs: evaluation, effective receptive fields,
Grad-CAM and training-curve plots, framework-free (a backend supplies the framework calls).
Imports ``core``, ``data``, ``models`` (variants and weights), ``engine`` (log columns and
metrics) and ``backends.base``.
"""
