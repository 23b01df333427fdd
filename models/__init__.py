"""The OverLoCK network in both frameworks, and its weights.

- ``variants``: every variant once, framework-free; both twins build from it.
- ``overlock_torch`` / ``overlock_jittor``: the twins (same classes, order, parameter names; a diff
  shows framework differences only).
- ``overlock_common``: what the twins share, framework-free (relative-position-bias index,
  dilated-branch table, per-block arguments, model config and per-stage ``feature_info`` of
  timm's interface, the factories made from the table).
- ``torch_compat_jittor``: PyTorch semantics for the Jittor twin (BatchNorm2d, SyncBatchNorm,
  adaptive pooling, bilinear interpolate, DropPath); ``sync_batchnorm_torch``: the PyTorch
  twin's SyncBatchNorm, on any device.
- ``na2d_*``, ``depthwise_jittor``, ``fused_jittor``, ``matmul_jittor``: the ops they use.
- ``weights``: state dicts checked against the architecture; ``convert``: the converter CLI.

Imports only ``core`` and itself.
"""
