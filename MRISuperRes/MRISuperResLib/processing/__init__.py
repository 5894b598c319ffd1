"""Image processing shared by the engine, training and evaluation: normalisation, masks, N4, registration,
B-spline and classical interpolation, forward models (degradation) and simulated acquisitions, data consistency.

Nothing here imports the engine, training, the command line or Slicer.
"""
