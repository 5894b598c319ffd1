"""Training: simulated or registered real pairs, augmentation, losses, validation, resume, DDP.

Entry points: ``mrisuperres train --config CFG [--resume]`` and, from Python::

    from MRISuperResLib.training.config import load_config
    from MRISuperResLib.training.loop import Trainer

    result = Trainer(load_config("configs/edsr3d_x2_small.yaml")).run()
    print(result.model_path, result.best)

Modules: :mod:`.config` (the YAML schema), :mod:`.data` (subjects, simulation, patch sampling),
:mod:`.augment`, :mod:`.losses`, :mod:`.loop` (the trainer), :mod:`.distributed` (torchrun / DDP),
:mod:`.registration` and :mod:`.preprocess` (real pairs, N4, masks, cropping).
"""
