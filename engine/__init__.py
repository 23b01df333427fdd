"""The framework-free training engine that train.py and train_torch.py share: command line and
options, the recipe, logs and metrics, checkpoints / resume / signals, and the loop. It talks to
a framework only through ``backends.base.Backend``. Imports ``core``, ``data``, ``models``
(variants and weights, no framework) and ``backends.base``.
"""
