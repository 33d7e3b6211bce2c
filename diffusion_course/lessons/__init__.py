"""Measurements made for one lesson (one module per notebook, like :mod:`..widgets` and :mod:`..exercises`).

* :mod:`.eta` (notebook 05): σ along a grid, runs from one fixed x_T and their variance and feature spread,
  the η × steps table (which notebook 06 fills again on its own grids);
* :mod:`.steps` (notebook 06): DDIM's Table 1, the Pareto front of cost and quality, the speed-up at equal
  quality.

Measurement that is not tied to a lesson lives in :mod:`diffusion_course.metrics` and
:mod:`diffusion_course.scoring`.
"""
