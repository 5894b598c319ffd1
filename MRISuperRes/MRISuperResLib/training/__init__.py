"""Training: simulated or registered real pairs, augmentation, losses, validation, resume, DDP.

Entry points: ``mrisuperres train --config CFG [--resume]`` and, from Python::

    from MRISuperResLib.training.config import load_config
    from MRISuperResLib.training.loop import Trainer

    result = Trainer(load_config("configs/edsr3d_x2_small.yaml")).run()
    print(result.model_path, result.best)

Modules: :mod:`.config` (the YAML schema, ``base:`` composition), :mod:`.data` (subjects, simulation, patch
sampling), :mod:`.loading`, :mod:`.augment`, :mod:`.losses`, :mod:`.loop` (the trainer) with :mod:`.builders`,
:mod:`.patch_step`, :mod:`.point_sampling`, :mod:`.prefetch` (batches and simulations drawn ahead),
:mod:`.weight_average` (``optim.ema``), :mod:`.validation`, :mod:`.run_files` and :mod:`.model_files`,
:mod:`.distributed` (torchrun / DDP). Real pairs, N4, masks and cropping are in :mod:`MRISuperResLib.processing`.
"""
