"""The resumable train loader: order from (seed, epoch), position saved and restored."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from lego.data.sampling import EpochIndex, ResumableDataLoader, ResumableSampler
from lego.data.seeds import derive_seed


class Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: EpochIndex) -> tuple[int, int]:
        return item


def collate(batch: list[tuple[int, int]]) -> list[int]:
    return [index for _, index in batch]


def loader(n: int = 10, batch_size: int = 2, epoch: int = 0, workers: int = 0,
           **over) -> ResumableDataLoader:
    sampler = ResumableSampler(Indices(n), shuffle=True, seed=over.pop("seed", 7), **over)
    sampler.set_epoch(epoch)
    return ResumableDataLoader(Indices(n), sampler, batch_size=batch_size, collate_fn=collate,
                               num_workers=workers, persistent_workers=workers > 0)


def test_order_is_distributed_samplers_and_ranks_split_it():
    dataset = Indices(11)
    for epoch in (0, 1):
        reference = []
        for rank in (0, 1):
            ours = ResumableSampler(dataset, shuffle=True, seed=5, num_replicas=2, rank=rank)
            theirs = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            drawn = list(ours)
            assert {e for e, _ in drawn} == {epoch}
            assert [i for _, i in drawn] == list(theirs)
            reference += [i for _, i in drawn]
        assert set(reference) == set(range(11))  # (one sample padded twice: 12 = 2 x 6)
    first, second = loader(epoch=0), loader(epoch=1)
    assert list(first) != list(second)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_neither_repeats_nor_skips(workers):
    """Worker processes read the sampler ahead; the position counts batches handed out."""
    full = list(loader(epoch=3))
    interrupted = loader(epoch=3, workers=workers)
    batches = iter(interrupted)
    seen = [next(batches), next(batches)]
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "batches": 2}

    resumed = loader(epoch=0, workers=workers)
    iterator = iter(resumed)  # made before the state is loaded (Lightning may do so)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)  # Lightning sets the epoch before the first batch
    seen.append(next(iterator))
    state = resumed.state_dict()
    assert state == {"epoch": 3, "batches": 3}

    again = loader(epoch=3)  # a second kill and resume within the same epoch
    again.load_state_dict(state)
    seen += list(again)
    assert seen == full
    assert again.state_dict() == {"epoch": 3, "batches": 5}
    assert len(again) == 5  # Lightning counts the epoch's batches itself


def test_resume_at_an_epochs_end_starts_the_next_epoch_whole():
    ended = loader(epoch=2)
    list(ended)
    resumed = loader()
    resumed.load_state_dict(ended.state_dict())
    resumed.sampler.set_epoch(3)
    assert list(resumed) == list(loader(epoch=3))


def test_the_epoch_source_overrides_set_epoch():
    source = loader(epoch=0)
    source._epoch = lambda: 4  # the DataModule passes the trainer's current_epoch
    assert list(source) == list(loader(epoch=4))
    assert source.state_dict() == {"epoch": 4, "batches": 5}


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, "flip", 2, 3) == derive_seed(1, "flip", 2, 3)
    assert len({derive_seed(1, "flip", e, i) for e in range(20) for i in range(50)}) == 1000
    assert derive_seed(1, 2) != derive_seed("1", 2)
    assert 0 <= derive_seed(0) < 2**63
    torch.Generator().manual_seed(derive_seed(2**62, "x"))
