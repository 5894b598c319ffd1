"""Imaging: volumes and their files. The :class:`~.volume.Volume` type (array ``[i, j, k]`` + LPS grid), reading and
writing NIfTI / NRRD / MHA / DICOM with exact geometry, header checks, and writes that are complete or absent.

No module here imports torch.
"""
