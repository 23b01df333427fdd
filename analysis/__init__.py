"""What is computed from a trained model or its logs, framework-free (a backend supplies the
framework calls): evaluation, effective receptive fields, Grad-CAM and training-curve plots.

- ``evaluate``: top-1 / top-5 / loss of a checkpoint (evaluate.py, evaluate_torch.py);
- ``erf``: the ERF command, its method in ``erf_maps``, its figure in ``erf_figure``;
- ``gradcam``: the Grad-CAM command, its method in ``gradcam_maps``, its figure in
  ``gradcam_figure``;
- ``plotting``: training curves and tables from the CSV logs (plot.py, plot_torch.py);
- ``bench_table``: bench.py's table (medians over rounds, Jittor against the best PyTorch peer);
- ``compare``: the alignment study (compare.py): its runs in ``compare_study``, statistics in
  ``compare_stats``, numbers in ``compare_data``, report in ``compare_report`` /
  ``compare_figure``, seed 0's ERF and Grad-CAM side by side in ``compare_maps`` /
  ``compare_maps_figure``;
- ``divergence``: the divergence locator (locate_divergence.py), its comparison in
  ``divergence_blocks`` (the probes are ``backends.probe_torch`` / ``backends.probe_jittor``);
- ``checkpoints``, ``inputs``, ``output``: what they share (reading weights, the validation
  images and common flags, the output folders checked before the work and each result's
  files written all or none).

Imports ``core``, ``data``, ``models`` (variants and weights), ``engine`` (log columns and
metrics) and ``backends.base``; the entry scripts pass in the concrete backends and probes.
"""
