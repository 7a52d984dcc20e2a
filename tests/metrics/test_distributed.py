"""Two CPU processes (gloo) give the same metric values as one process over the same pairs."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lego.metrics.suite import EditMetricSuite, ScoredPair

METRICS = ["psnr", "lpips_alex", "fid", "egovlp", "egovlp_plus", "clip"]


def _pairs():
    g = torch.Generator().manual_seed(0)
    return [ScoredPair(f"c{i}/a0", torch.rand(3, 48, 64, generator=g),
                       torch.rand(3, 48, 64, generator=g), torch.rand(3, 48, 64, generator=g))
            for i in range(6)]


def _worker(rank, world, init_file, weights, out_dir):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        suite = EditMetricSuite(METRICS, weights_dir=weights)
        pairs = _pairs()[rank::world]
        suite.update(pairs[:1])  # several updates per rank, uneven split of the work
        suite.update(pairs[1:])
        results = suite.compute()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path, metric_weights):
    single = EditMetricSuite(METRICS, weights_dir=metric_weights)
    single.update(_pairs())
    expected = single.compute()
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(metric_weights),
                                      str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-4), name
