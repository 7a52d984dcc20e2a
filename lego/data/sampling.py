"""A resumable training loader: the order is a function of (seed, epoch), the position is state.

:class:`ResumableSampler` is this rank's slice of a permutation drawn from ``(seed, epoch)``
(a ``DistributedSampler``, so Lightning keeps it under DDP instead of putting its own in), and
yields :class:`EpochIndex` so that per-epoch augmentation can be drawn from ``(seed, epoch,
sample)``. :class:`ResumableDataLoader` counts the batches it has handed to the training loop in
the current epoch; its ``state_dict`` is that position, and after ``load_state_dict`` its next
iteration of the same epoch starts after it: a run resumed mid-epoch neither repeats nor skips a
batch. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any, NamedTuple, cast

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class EpochIndex(NamedTuple):
    """A sample index with the epoch in which the sampler draws it."""

    epoch: int
    index: int


class ResumableSampler(DistributedSampler[EpochIndex]):
    """This rank's slice of the ``(seed, epoch)`` permutation, from a given position on.

    The order is ``DistributedSampler``'s: a permutation seeded with ``seed + epoch`` (or the
    dataset order without ``shuffle``), padded to a multiple of ``num_replicas`` and sliced by
    rank. ``set_epoch`` (which Lightning calls at each epoch start) picks the epoch.

    Args:
        dataset: The dataset (only its length is used).
        shuffle: Shuffle each epoch.
        seed: Seed of the permutations.
        num_replicas: Number of data-parallel ranks.
        rank: This rank.
    """

    def __init__(
        self, dataset: Sized, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        #: Samples of this rank's slice to leave out at the start of the next iteration.
        self.start = 0

    def __iter__(self) -> Iterator[EpochIndex]:
        epoch, start, self.start = self.epoch, self.start, 0
        indices = list(cast(Iterator[int], super().__iter__()))[start:]
        return (EpochIndex(epoch, i) for i in indices)


class ResumableDataLoader(DataLoader[Any]):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose position is saved and restored.

    The position is ``(epoch, batches handed out in that epoch)``: the same on every rank, so the
    checkpoint of rank zero restores all of them. Iteration is lazy: the sampler is read at the
    first batch, after Lightning has set the epoch and restored the checkpoint, whatever the
    order in which it created the loader's iterator and restored the state.

    Args:
        dataset: The dataset.
        sampler: The resumable sampler.
        batch_size: Samples per batch.
        epoch: Where the epoch of an iteration comes from, read when it starts (the trainer's
            ``current_epoch``). Without it the sampler's ``set_epoch`` decides, which
            Lightning 2.6 calls with one more than the epoch after resuming from a checkpoint
            written at an epoch's end (its fit loop counts that epoch's end twice).
        **kwargs: Other ``DataLoader`` options (workers, collate function, ...).
    """

    sampler: ResumableSampler

    def __init__(
        self,
        dataset: Dataset[Any],
        sampler: ResumableSampler,
        batch_size: int,
        epoch: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._epoch = epoch
        self._position = (sampler.epoch, 0)
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        if self._epoch is not None:
            self.sampler.set_epoch(self._epoch())
        epoch, done = self.sampler.epoch, 0
        if self._resume is not None:
            resume_epoch, resume_batches = self._resume
            self._resume = None
            if resume_epoch == epoch:
                done = resume_batches
        assert self.batch_size is not None
        self.sampler.start = done * self.batch_size
        self._position = (epoch, done)
        for batch in super().__iter__():
            # counted before the batch is handed out: a checkpoint taken while the training loop
            # works on it (its end of batch) resumes after it
            done += 1
            self._position = (epoch, done)
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The position: the current epoch and the batches of it handed out so far."""
        epoch, batches = self._position
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume after the saved position when the next iteration is of the saved epoch.

        Args:
            state: A :meth:`state_dict`.
        """
        self._resume = (int(state["epoch"]), int(state["batches"]))
        self._position = self._resume
