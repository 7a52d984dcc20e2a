import logging

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from lego.callbacks import ProgressLogger


class LossModel(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train/loss", out["loss"])
        return out


def test_progress_lines_every_n_steps_with_loss_speed_and_time_left(caplog, tmp_path):
    caplog.set_level(logging.INFO)
    trainer = Trainer(max_steps=6, callbacks=[ProgressLogger(every_n_steps=2)], logger=False,
                      enable_progress_bar=False, enable_checkpointing=False,
                      limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(LossModel())
    lines = [r.getMessage() for r in caplog.records if "fit step" in r.getMessage()]
    assert [line.split(" | ")[0] for line in lines] == [
        "fit step 2/6 (33 %)", "fit step 4/6 (67 %)", "fit step 6/6 (100 %)"]
    assert all("train/loss" in line and "steps/s" in line and "left" in line for line in lines)


def test_predict_lines_count_batches(caplog, tmp_path):
    caplog.set_level(logging.INFO)
    trainer = Trainer(callbacks=[ProgressLogger(every_n_steps=30)], logger=False,
                      enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.predict(BoringModel())  # 64 batches
    lines = [r.getMessage() for r in caplog.records if "predict batch" in r.getMessage()]
    assert [line.split(" | ")[0] for line in lines] == [
        "predict batch 30/64", "predict batch 60/64", "predict batch 64/64"]


def test_every_n_steps_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        ProgressLogger(every_n_steps=0)
