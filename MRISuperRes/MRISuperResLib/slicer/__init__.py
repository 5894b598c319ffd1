"""The Slicer bridge: MRML-side logic of the MRISuperRes and MRISuperResTraining modules (no Qt).

Only modules in this folder import ``slicer``; they reach the engine only through its public functions and the
background processes of :mod:`.runner`.
"""
