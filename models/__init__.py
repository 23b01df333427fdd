"""The OverLoCK network in both frameworks, and its weights.

- ``variants``: every variant once, framework-free; both twins build from it.
- ``overlock_torch`` / ``overlock_jittor``: the twins (same classes, order, parameter names).
- ``na2d_*``, ``depthwise_jittor``, ``fused_jittor``, ``matmul_jittor``: the ops they use.
- ``weights``: state dicts checked against the architecture; ``convert``: the converter CLI.

Imports only ``core`` and itself.
"""
