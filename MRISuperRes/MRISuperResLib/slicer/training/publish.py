"""Publish a run's model where the Enhance module finds it (no Qt).

The output folder of a run is registered as a user model folder (:func:`register_output_folder`) when the run is
prepared; the run folder inside it (``runs/<name>/``) is not, so only the published copy is listed.
:class:`ModelPublisher` copies the trainer's ``best.safetensors`` each time it improves, and the final model when
training ends, to ``<output_folder>/<name>.safetensors`` with a Markdown card
(:func:`~...engine.model_zoo.write_model_card`): the model is then listed by
:func:`~...engine.model_zoo.list_models` and enhances by name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ...engine import model_zoo
from ...errors import MRISuperResError, OutputError
from .job import TrainingJob


def register_output_folder(output_folder: Path) -> None:
    """Register ``output_folder`` as a user model folder (kept in the user's settings; listed by the model zoo)."""
    model_zoo.register_model_folder(output_folder)


class ModelPublisher:
    """Copies a run's newest model to its published place, once per version of the source file."""

    def __init__(self) -> None:
        self._published: dict[Path, int] = {}

    def publish(self, job: TrainingJob, final: bool) -> bool:
        """Copy the final model (``final``: when finished; else, or without one, ``best.safetensors``) to
        :attr:`TrainingJob.model_path` with its card, atomically.

        Returns:
            ``True`` when a new version was published; ``False`` when there is nothing new, or when the trainer
            replaced the checkpoint while it was copied (the next call copies the new one).

        Raises:
            OutputError: the model cannot be written to the output folder (e.g. its disk is full).
        """
        source = job.run_folder / (f"{job.name}.safetensors" if final else "best.safetensors")
        if final and not source.is_file():
            source = job.run_folder / "best.safetensors"
        try:
            mtime = source.stat().st_mtime_ns
        except OSError:
            return False
        if self._published.get(source) == mtime:
            return False
        target = job.model_path
        temporary = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
            model_zoo.write_model_card(target)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot publish the model to {target}: {error.strerror or error}") from None
        except MRISuperResError:
            # The trainer replaced the checkpoint while it was copied: the next poll copies the new one.
            temporary.unlink(missing_ok=True)
            return False
        self._published[source] = mtime
        return True
