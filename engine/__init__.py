"""The framework-free training engine that train.py and train_torch.py share. It talks to a
framework only through ``backends.base.Backend``.

- ``cli``: the command line (parser, argument checks, the output folder's check).
- ``options``: the options the protocol or the recipe fills in, the learning rate per epoch;
  ``recipe``: the official ImageNet-1k recipe and numpy references of the training step.
- ``logs``: log.csv, steps.csv and config.json; ``metrics``: validation metrics in numpy.
- ``signals``: the stop signals and what they do while a run starts and while it trains;
  ``settings``: the settings --resume compares with the saved run's.
- ``state``: the position in a run, the checkpoint's contents, init and resume.
- ``epoch``: one epoch's training steps and validation; ``loop``: the whole run (``run_cli``,
  ``run_training``).

Imports ``core``, ``data``, ``models`` (variants and weights, no framework) and
``backends.base``.
"""
