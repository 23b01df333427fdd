"""One module per framework: everything the scripts need from Jittor or PyTorch.

``base`` is the interface (an ABC) that the engine and the analysis code call; ``jittor_backend``
and ``torch_backend`` implement it: device choice, building a model, loading a checkpoint of
either framework, logits, stage outputs, the training step and the collectives. ``probe_torch``
and ``probe_jittor`` record a model's block outputs and parameter gradients for the divergence
locator (``analysis.divergence``). Imports ``core``, ``models`` and itself.
"""
