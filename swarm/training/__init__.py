"""Local training for one swarm node: datasets, models, partitions and the Trainer.

The node calls :class:`Trainer` from a worker thread (``asyncio.to_thread`` or an executor) so its event loop
keeps answering while a step runs; nothing here starts threads. Nothing here touches the replicated state: the
server update step is in swarm/ledger/server_optimizer.py.
"""
from .datasets import DATASETS, Dataset, load_dataset
from .models import MODELS, build_model
from .params import flatten_parameters, load_flat_parameters
from .partition import partition_indices
from .trainer import Trainer

__all__ = ["DATASETS", "Dataset", "MODELS", "Trainer", "build_model", "flatten_parameters",
           "load_dataset", "load_flat_parameters", "partition_indices"]
