"""A training loader that resumes inside an epoch: a seeded shuffle per epoch, a seed per sample, a saved position.

A run killed in the middle of an epoch and resumed from a step checkpoint must see exactly the samples the
uninterrupted run would have seen next, augmented the same way: neither repeat nor skip one. Three pieces make that
hold (and they hold for any number of DataLoader workers, which prefetch ahead of training):

- :class:`ResumableSampler` orders the videos of epoch ``e`` by a permutation that depends on ``(seed, e)`` only
  (like ``torch.utils.data.DistributedSampler``, which it extends, so Lightning leaves it in place under DDP) and
  splits it over the processes the same way.
- Every index it yields carries the sample's own seed, ``SampleKey(index, seed)`` with the seed a hash of
  ``(seed, e, index)``. :class:`~rsa_lightning.data.dataset.VideoDataset` draws the clip's frames and its augmentation
  from that seed, not from a worker's RNG stream, so what a sample looks like does not depend on which worker or
  which process run reads it.
- :class:`ResumableDataLoader` has ``state_dict`` / ``load_state_dict``, so Lightning stores its state in every
  checkpoint (``loops.fit_loop.state_dict.combined_loader``) and hands it back on resume. The position is the
  number of batches the *training loop* has finished in the epoch (its ``batch_progress``), not how far the
  sampler or the workers have read ahead. On resume the sampler starts its epoch there.

Under DDP all processes finish the same number of batches, so rank 0's state, which the checkpoint holds, is every
rank's state. The sampler's seed is part of the state: a run started with ``seed=null`` draws one and resumes with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from rsa_lightning.errors import ConfigError

log = logging.getLogger(__name__)


class SampleKey(NamedTuple):
    """A dataset index and the seed of that sample's random choices (clip position, augmentation)."""

    index: int
    seed: int


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 62-bit seed for sample ``index`` in ``epoch`` of a run seeded ``seed`` (numpy ``SeedSequence`` hashing:
    neighbouring inputs give unrelated seeds)."""
    low, high = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(high) << 30 | int(low)) & (2**62 - 1)


class ResumableSampler(DistributedSampler):
    """Epoch-seeded shuffling that can start an epoch part-way; yields :class:`SampleKey`.

    Args:
        dataset: the training dataset (only its length is used).
        seed: the run's seed (``seed`` of the training config); epoch ``e`` is shuffled by ``torch.randperm`` with a
            generator seeded ``seed + e``, exactly as ``DistributedSampler`` does.
        num_replicas / rank: the processes of a DDP run and this one (1 and 0 without DDP).
        drop_last: drop the tail that does not divide evenly over the processes (``DistributedSampler``'s rule);
            the DataLoader's own ``drop_last`` drops the last incomplete batch.

    ``start_epoch(epoch, skip)`` makes the next ``__iter__`` serve epoch ``epoch`` from its ``skip``-th sample on;
    the iteration after it starts at 0 again. Lightning calls ``set_epoch`` before every epoch.
    """

    def __init__(
        self, dataset: Dataset, *, seed: int, num_replicas: int = 1, rank: int = 0, drop_last: bool = False
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self._skip = 0

    def start_epoch(self, epoch: int, skip: int) -> None:
        """Serve ``epoch`` from its ``skip``-th sample (of this process) at the next iteration."""
        if not 0 <= skip <= self.num_samples:
            raise ValueError(f"cannot skip {skip} samples of an epoch of {self.num_samples}")
        self.epoch, self._skip = epoch, skip

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(super().__iter__())[self._skip :]
        epoch, self._skip = self.epoch, 0
        return iter([SampleKey(i, sample_seed(self.seed, epoch, i)) for i in indices])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` whose state is the training loop's position in the epoch.

    Args:
        dataset / batch_size / ``**kwargs``: as for ``DataLoader`` (no ``shuffle``: the sampler shuffles).
        sampler: the :class:`ResumableSampler`.
        batches_done: returns how many batches of the current epoch the training loop has finished and whether that
            ends the epoch (the DataModule passes ``trainer.fit_loop.epoch_loop.batch_progress.current.processed``,
            compared with ``trainer.num_training_batches``, which ``limit_train_batches`` may make shorter than the
            loader); ``state_dict`` stores both.

    ``state_dict()`` -> ``{"epoch", "batches_done", "epoch_done", "batch_size", "seed", "num_replicas"}``;
    ``load_state_dict`` makes the next iteration start after those batches, or at the start of the next epoch when
    the saved one was done (a different ``batch_size`` or process count inside an epoch is refused with a message:
    the position would not mean the same samples).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        sampler: ResumableSampler,
        batch_size: int,
        batches_done: Callable[[], tuple[int, bool]],
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # Lightning replaced it (trainer.overfit_batches)
            return {}
        batches, epoch_done = self.batches_done()
        return {
            "epoch": sampler.epoch,
            "batches_done": int(batches),
            "epoch_done": bool(epoch_done),
            "batch_size": self.batch_size,
            "seed": sampler.seed,
            "num_replicas": sampler.num_replicas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableSampler):
            return
        sampler.seed = state["seed"]
        if state.get("epoch_done"):  # saved at the end of an epoch: the next one starts from its first sample
            sampler.start_epoch(state["epoch"] + 1, 0)
            return
        for key in ("batch_size", "num_replicas"):
            now = self.batch_size if key == "batch_size" else sampler.num_replicas
            if state[key] != now:
                raise ValueError(
                    f"the checkpoint was saved with {key}={state[key]} per process and this run has {now}: resuming "
                    "inside an epoch needs the same data.batch_size and number of processes (or resume from an "
                    "end-of-epoch checkpoint)"
                )
        skip = min(state["batches_done"] * self.batch_size, sampler.num_samples)
        sampler.start_epoch(state["epoch"], skip)
        if skip:
            # 1-based, as the console counts epochs (rsa_lightning.utils.console.epoch_label)
            epoch, done = state["epoch"] + 1, state["batches_done"]
            log.info("resuming epoch %d of the training data after %d batches", epoch, done)


def resumable_loader(
    dataset: Dataset,
    *,
    seed: Optional[int],
    batch_size: int,
    num_replicas: int,
    rank: int,
    batches_done: Callable[[], tuple[int, bool]],
    **kwargs: Any,
) -> ResumableDataLoader:
    """The training loader: :class:`ResumableSampler` (``seed=None``: a random seed, logged) in a
    :class:`ResumableDataLoader` dropping the last incomplete batch. ``kwargs`` go to ``DataLoader``.

    Raises:
        ConfigError: fewer training samples per process than one batch (every epoch would be empty).
    """
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        log.info("training data shuffled with seed %d (no seed configured)", seed)
    sampler = ResumableSampler(dataset, seed=seed, num_replicas=num_replicas, rank=rank)
    if sampler.num_samples < batch_size:  # the last incomplete batch is dropped: nothing would be trained
        processes = f" per process ({num_replicas} processes)" if num_replicas > 1 else ""
        raise ConfigError(
            f"the training split has {len(dataset)} video(s) ({sampler.num_samples}{processes}), fewer than one batch "
            f"of data.batch_size={batch_size}, so every epoch would be empty; lower data.batch_size or add videos"
        )
    return ResumableDataLoader(
        dataset, sampler=sampler, batch_size=batch_size, batches_done=batches_done, drop_last=True, **kwargs
    )
