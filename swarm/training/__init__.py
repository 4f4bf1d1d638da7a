"""Local training for one swarm node: datasets, models, partitions, the Trainer, and the server update step.

The node calls :class:`Trainer` from a worker thread (``asyncio.to_thread`` or an executor) so its event loop
keeps answering while a step runs; nothing here starts threads. Only :func:`apply_update` touches the
replicated state, and it is deterministic on the CPU.
"""
from .datasets import DATASETS, Dataset, load_dataset
from .models import MODELS, build_model
from .params import flatten_parameters, load_flat_parameters
from .partition import partition_indices
from .server_optimizer import apply_update
from .trainer import Trainer

__all__ = ["DATASETS", "Dataset", "MODELS", "Trainer", "apply_update", "build_model", "flatten_parameters",
           "load_dataset", "load_flat_parameters", "partition_indices"]
