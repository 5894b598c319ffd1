"""Evaluation against ground truth: PSNR / SSIM (and DICE) of a model, cubic B-spline and Fourier zero-filling,
per volume, with the tables and figures that report them.
"""
