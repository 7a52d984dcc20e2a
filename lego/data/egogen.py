"""The EgoGen release format: records JSON, safe frame paths, frame loading, Dataset, DataModule.

Layout of a dataset root (the paper's release; SynthEgo writes the same)::

    <root>/EgoGen/<frames_subdir>/{train,val,val_gt_for_metric}/<clip>/<action>/<frame>
    <root>/<name>_{train,val}.json        {clip_id: {action_id: {image_0, image_1, action, ...}}}
    <root>/<name>_metadata.json           {clip_id: {height, width, ...}}
    <root>/curation_from_gpt/<name>_for_tuning_forecasting.json   LLaVA conversation list
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal, Protocol

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lego.batch import EgoBatch, EgoSample
from lego.data.features import open_features, scan_shards
from lego.data.io import DataFormatError, load_json, safe_join
from lego.data.records import (
    REQUIRED_FIELDS,
    Record,
    check_complete,
    frame_to_tensor,
    open_rgb,
    read_records,
)
from lego.data.sampling import EpochIndex, ResumableDataLoader, ResumableSampler
from lego.data.seeds import derive_seed

log = logging.getLogger(__name__)

TextSource = Literal["action", "raw_action", "description"]
FrameCheck = Literal["open", "decode", "none"]
OnBadRecord = Literal["error", "skip"]

def _check_unicode(text: str, name: str, where: str) -> None:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate left by bad JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataFormatError(
            f"{where}: field {name!r} is not valid Unicode ({err.reason} at character "
            f"{err.start}: {text[max(0, err.start - 20):err.start]!r}...)"
        ) from err


class FeatureReader(Protocol):
    """Supplies VLM embeddings for a sample (the VLM feature cache plugs in here)."""

    def read(self, sample_id: str, image_0: str) -> dict[str, Tensor]:
        """Return ``{"vlm_image": N x D, "vlm_text": 77 x D, "vlm_text_mask": 77}``."""
        ...


@dataclass(frozen=True)
class PreparedRecord:
    """A validated record with resolved paths and the strings a sample needs."""

    clip_id: str
    action_id: str
    image_0: str
    image_1: str | None
    input_path: Path
    target_path: Path | None
    action: str
    raw_action: str
    text: str
    description: str | None
    curated: str | None
    question: str | None
    where: str

    @property
    def sample_id(self) -> str:
        """``"<clip_id>/<action_id>"``."""
        return f"{self.clip_id}/{self.action_id}"


class EgoGenDataset(Dataset[EgoSample]):
    """Pure-torch dataset over prepared records: loads, resizes and (jointly) flips frames.

    Args:
        records: Validated records of one split.
        resolution: Square side the frames are squashed to.
        flip_prob: Probability of flipping input and target frames together horizontally. The
            text is left as it is (the paper's behaviour), so "left"/"right" is not swapped.
            Whether a sample is flipped is drawn from ``(seed, epoch, index)`` (the epoch comes
            with the index from :class:`~lego.data.sampling.ResumableSampler`; 0 for a plain
            index), never from the global random state: a resumed run flips as an uninterrupted
            one.
        load_targets: Load the target frame (off for inference on unseen inputs).
        feature_reader: Optional source of VLM embeddings, keyed by sample id and input path.
        seed: Seed of the flips.
        input_images: Also return the input frame as stored (``input_image``, full-size RGB),
            for a VLM whose processor resizes it: the frame is decoded here, in the loader's
            workers, not in the model's step.
    """

    def __init__(
        self,
        records: list[PreparedRecord],
        resolution: int,
        flip_prob: float = 0.0,
        load_targets: bool = True,
        feature_reader: FeatureReader | None = None,
        seed: int = 0,
        input_images: bool = False,
    ) -> None:
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.seed = seed
        self.input_images = input_images
        self.records = records
        self.resolution = resolution
        self.flip_prob = flip_prob
        self.load_targets = load_targets
        self.feature_reader = feature_reader

    def __len__(self) -> int:
        return len(self.records)

    def flipped(self, epoch: int, index: int) -> bool:
        """Whether sample ``index`` is flipped in ``epoch`` (a function of the seed and both)."""
        if self.flip_prob <= 0:
            return False
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "flip", epoch, index))
        return bool(torch.rand((), generator=generator) < self.flip_prob)

    def __getitem__(self, item: int | EpochIndex) -> EgoSample:
        epoch, index = item if isinstance(item, EpochIndex) else (0, int(item))
        rec = self.records[index]
        image = open_rgb(rec.input_path, rec.where)
        inp = frame_to_tensor(image, self.resolution)
        target = None
        if self.load_targets and rec.target_path is not None:
            target = frame_to_tensor(open_rgb(rec.target_path, rec.where), self.resolution)
        if self.flipped(epoch, index):
            inp = inp.flip(-1)
            target = target.flip(-1) if target is not None else None
            image = ImageOps.mirror(image)
        sample = EgoSample(
            sample_id=rec.sample_id,
            clip_id=rec.clip_id,
            action_id=rec.action_id,
            image_0=rec.image_0,
            image_1=rec.image_1,
            input_frame=inp,
            target_frame=target,
            action=rec.action,
            raw_action=rec.raw_action,
            text=rec.text,
            description=rec.description,
            curated=rec.curated,
            question=rec.question,
            input_path=str(rec.input_path),
            input_image=image if self.input_images else None,
        )
        if self.feature_reader is not None:
            for key, value in self.feature_reader.read(rec.sample_id, rec.image_0).items():
                setattr(sample, key, value)
        return sample


@dataclass
class ValidationReport:
    """Outcome of the setup-time validation pass over one split."""

    split: str
    records: list[PreparedRecord] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (sample id, message)

    def summary(self) -> str:
        """One line: how many records were checked and how many were bad."""
        total = len(self.records) + len(self.bad)
        return f"{self.split}: {total} records, {len(self.records)} valid, {len(self.bad)} bad"


class EgoGenDataModule(LightningDataModule):
    """Base DataModule for datasets in the EgoGen release format.

    Subclasses name the dataset (``name``: the file prefix, e.g. ``ego4d``), its frame folder
    (``frames_subdir``) and how action labels are cleaned (:meth:`clean_action`).

    Every split a stage needs is validated once at ``setup()``: records, fields, paths and
    frames are checked (with a progress bar and a summary) so that bad input fails before
    training starts, not in the middle of an epoch.

    Args:
        root: Dataset root holding ``EgoGen/`` and the ``<name>_<split>.json`` files.
        train_split: Split used for training.
        val_split: Split used for validation (the paper validates on ``val``).
        test_split: Split used by ``test`` (the release has no test split: ``val`` is the test set).
        predict_split: Split used by ``predict``.
        resolution: Side length frames are squashed to (LANCZOS), as in the paper (256).
        batch_size: Samples per batch (per device).
        num_workers: DataLoader worker processes.
        text_source: The prompt given to the generator: ``action`` (cleaned label), ``raw_action``
            (the label as stored, the paper's IP2P baseline) or ``description`` (the enriched
            description under ``description_key``).
        description_key: Record field holding the enriched description.
        flip_prob: Joint horizontal flip probability on the train split (paper: 0.5). The text
            is not changed by a flip, so datasets whose text names "left"/"right" should use 0.
        on_bad_record: ``error`` stops at setup with every bad record listed; ``skip`` logs
            each skipped record and the total, then goes on without them.
        check_frames: How frames are checked at setup: ``open`` reads headers and checks that
            JPEG and PNG files are complete (their end marker: as cheap as the header),
            ``decode`` decodes every pixel, ``none`` only checks that the files exist.
        records_dir: Folder holding the records JSON files, if not ``root`` (e.g. a copy
            enriched with VLM descriptions).
        curated_file: The curated conversation list; default
            ``<root>/curation_from_gpt/<name>_for_tuning_forecasting.json`` when it exists.
        curated_only: Train only on the records with a curated answer (instruction tuning: the
            paper's curated file covers part of the train split); the count used is logged.
        max_samples: Keep only the first N records of each split (quick experiments).
        shuffle: Shuffle the training split.
        data_seed: Seed of the training order and flips: epoch ``e`` visits this rank's slice of
            a permutation drawn from ``(data_seed, e)`` and flips a sample as ``(data_seed, e,
            sample)`` says, so a run resumed from a checkpoint sees the same batches as an
            uninterrupted one. (Not ``seed``: Lightning refuses a key that the model's and the
            DataModule's hyperparameters share with different values.)
        features: VLM features attached to each sample (``vlm_image``, ``vlm_text``,
            ``vlm_text_mask``): the describe stage's feature cache root, one cache per split
            (``<features>/<split>``), or with ``features_layout: official_npy`` the paper's image
            feature root (``<features>/<split>/<image_0 with jpg -> npy>``).
        features_layout: ``cache`` (the describe stage's cache) or ``official_npy``.
        features_text: The paper's text feature root (``official_npy`` only).
        vlm_dim: Expected VLM embedding width D; features of another width are refused at setup.
        vlm_image_tokens: Expected number of VLM image tokens (checked against a cache manifest).
        input_images: Batches also carry each input frame as stored (``input_images``, full-size
            RGB) for a VLM's processor; ``python -m lego`` sets it from the model
            (``reads_input_images``).
        skip_described: The describe stage's feature cache root: ``predict`` leaves out the
            samples ``<skip_described>/<predict_split>`` already holds, so a killed describe
            run resumes where it stopped (a damaged shard is set aside and its samples redone).
    """

    name: ClassVar[str] = "egogen"
    frames_subdir: ClassVar[str] = "egogen"

    def __init__(
        self,
        root: Path,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "val",
        resolution: int = 256,
        batch_size: int = 32,
        num_workers: int = 4,
        text_source: TextSource = "action",
        description_key: str = "llava_forecast_finetune",
        flip_prob: float = 0.5,
        on_bad_record: OnBadRecord = "error",
        check_frames: FrameCheck = "open",
        records_dir: Path | None = None,
        curated_file: Path | None = None,
        curated_only: bool = False,
        max_samples: int | None = None,
        shuffle: bool = True,
        data_seed: int = 0,
        features: Path | None = None,
        features_layout: Literal["cache", "official_npy"] = "cache",
        features_text: Path | None = None,
        vlm_dim: int | None = None,
        vlm_image_tokens: int | None = None,
        input_images: bool = False,
        skip_described: Path | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if resolution <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.root = Path(root)
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.predict_split = predict_split
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.text_source = text_source
        self.description_key = description_key
        self.flip_prob = flip_prob
        self.on_bad_record = on_bad_record
        self.check_frames = check_frames
        self.records_dir = Path(records_dir) if records_dir is not None else self.root
        self.curated_file = Path(curated_file) if curated_file is not None else None
        self.curated_only = curated_only
        self.max_samples = max_samples
        self.shuffle = shuffle
        self.data_seed = data_seed
        #: A reader injected for every split (overrides ``features``).
        self.feature_reader: FeatureReader | None = None
        self.features = Path(features) if features is not None else None
        self.features_layout = features_layout
        self.features_text = Path(features_text) if features_text is not None else None
        self.vlm_dim = vlm_dim
        self.vlm_image_tokens = vlm_image_tokens
        self.input_images = input_images
        self.skip_described = Path(skip_described) if skip_described is not None else None
        if features_layout == "official_npy" and features is not None and features_text is None:
            raise ValueError("features_layout official_npy needs features_text (the text root)")
        self.datasets: dict[str, EgoGenDataset] = {}
        self._curated: dict[str, tuple[str | None, str | None]] | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._train_position: dict[str, int] | None = None

    # ----------------------------------------------------------------------------- layout
    def clean_action(self, label: str) -> str:
        """Clean a raw action label (identity here; Ego4D strips narrator marks)."""
        return label.strip()

    def frames_dir(self, split: str) -> Path:
        """Folder of the frames of ``split``: ``<root>/EgoGen/<frames_subdir>/<split>``."""
        return self.root / "EgoGen" / self.frames_subdir / split

    def gt_dir(self) -> Path:
        """The ``val_gt_for_metric`` folder (target frames only, used by the metrics)."""
        return self.frames_dir("val_gt_for_metric")

    def records_file(self, split: str) -> Path:
        """The records JSON of ``split``: ``<records_dir>/<name>_<split>.json``."""
        return self.records_dir / f"{self.name}_{split}.json"

    def metadata_file(self) -> Path:
        """The ``<name>_metadata.json`` file (original frame sizes per clip, boxes...)."""
        return self.root / f"{self.name}_metadata.json"

    def metadata(self) -> dict[str, Any]:
        """Read the metadata file."""
        data = load_json(self.metadata_file())
        if not isinstance(data, dict):
            raise DataFormatError(f"{self.metadata_file()}: expected an object keyed by clip id")
        return data

    def default_curated_file(self) -> Path:
        """``<root>/curation_from_gpt/<name>_for_tuning_forecasting.json``."""
        return self.root / "curation_from_gpt" / f"{self.name}_for_tuning_forecasting.json"

    # ----------------------------------------------------------------------------- curated
    def curated(self) -> dict[str, tuple[str | None, str | None]]:
        """Curated conversations keyed by input-frame path: ``image -> (question, answer)``.

        Returns:
            An empty dict when no curated file is configured or present by default.

        Raises:
            DataFormatError: If the file is malformed.
        """
        if self._curated is not None:
            return self._curated
        path = self.curated_file or self.default_curated_file()
        if self.curated_file is None and not path.exists():
            self._curated = {}
            return self._curated
        data = load_json(path)
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a JSON list of LLaVA conversation entries")
        joined: dict[str, tuple[str | None, str | None]] = {}
        for i, entry in enumerate(data):
            where = f"{path}: entry {i}" + (
                f" (id {entry.get('id')!r})" if isinstance(entry, dict) and "id" in entry else ""
            )
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise DataFormatError(f"{where}: missing string field 'image'")
            turns = entry.get("conversations")
            if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
                raise DataFormatError(f"{where}: 'conversations' must be a list of turns")
            question = next((t.get("value") for t in turns if t.get("from") == "human"), None)
            answer = next((t.get("value") for t in turns if t.get("from") == "gpt"), None)
            if isinstance(question, str):
                question = question.replace("<image>", "").strip()
            key = str(PurePosixPath(entry["image"].replace("\\", "/")))
            joined[key] = (question, answer)
        self._curated = joined
        return joined

    # ----------------------------------------------------------------------------- validation
    def prepare_records(
        self,
        split: str,
        load_targets: bool = True,
        features: FeatureReader | None = None,
        check_metadata: bool = False,
    ) -> ValidationReport:
        """Read and validate the records of ``split`` (fields, text, paths, frames, features).

        Every fault of one record that can be found without training is found here, so
        ``on_bad_record: skip`` can leave the record out: missing or non-string fields, text
        that is not valid Unicode, unsafe paths, missing, unreadable, truncated or oversized
        frames, a clip without metadata (``check_metadata``), and a sample missing from the
        feature cache.

        Args:
            split: The split name.
            load_targets: Require and check the target frame of each record.
            features: The split's feature reader; a reader with a ``check(sample_id, image_0,
                where)`` method checks each record's features.
            check_metadata: Each record's clip must have an entry in the metadata file (when
                the dataset has one): the splits whose frames are written and scored.

        Returns:
            The report with the valid records and the bad ones with their messages.
        """
        path = self.records_file(split)
        records = read_records(path)
        if self.max_samples is not None:
            records = records[: self.max_samples]
        base = self.frames_dir(split)
        curated = self.curated() if split == self.train_split else {}
        report = ValidationReport(split)

        metadata = None
        if check_metadata and self.metadata_file().is_file():
            metadata = self.metadata()

        def check(rec: Record) -> PreparedRecord | tuple[str, str]:
            try:
                return self._prepare(rec, base, curated, load_targets, metadata, features)
            except DataFormatError as err:
                return (rec.sample_id, str(err))

        workers = min(8, max(1, len(records) // 256))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results: Iterator[PreparedRecord | tuple[str, str]] = pool.map(check, records)
            for result in tqdm(
                results,
                total=len(records),
                desc=f"Checking {self.name}/{split}",
                unit="rec",
                disable=len(records) < 2000,
            ):
                if isinstance(result, PreparedRecord):
                    report.records.append(result)
                else:
                    report.bad.append(result)
        log.info("%s/%s", self.name, report.summary())
        return report

    def _prepare(
        self,
        rec: Record,
        base: Path,
        curated: dict[str, tuple[str | None, str | None]],
        load_targets: bool,
        metadata: dict[str, Any] | None = None,
        features: FeatureReader | None = None,
    ) -> PreparedRecord:
        where = rec.where()
        required = REQUIRED_FIELDS if load_targets else ("image_0", "action")
        for key in required:
            if key not in rec.fields:
                raise DataFormatError(f"{where}: missing field {key!r}")
        raw_action = rec.fields["action"]
        if not isinstance(raw_action, str) or not raw_action.strip():
            raise DataFormatError(f"{where}: field 'action' must be a non-empty string")
        _check_unicode(raw_action, "action", where)
        input_path = safe_join(base, rec.fields["image_0"], where)
        image_1 = rec.fields.get("image_1")
        target_path = safe_join(base, image_1, where) if image_1 is not None else None
        if load_targets and target_path is None:
            raise DataFormatError(f"{where}: missing field 'image_1'")
        description = rec.fields.get(self.description_key)
        if description is not None and not isinstance(description, str):
            raise DataFormatError(f"{where}: field {self.description_key!r} must be a string")
        if description is not None:
            _check_unicode(description, self.description_key, where)
        if metadata is not None and rec.clip_id not in metadata:
            raise DataFormatError(
                f"{where}: clip {rec.clip_id!r} has no entry in {self.metadata_file()} (the "
                "metrics and frame writers need its frame size)"
            )
        check_features = getattr(features, "check", None)
        if check_features is not None:
            check_features(rec.sample_id, rec.fields["image_0"], where)
        action = self.clean_action(raw_action)
        if self.text_source == "description":
            if not description or not description.strip():
                raise DataFormatError(
                    f"{where}: text_source is 'description' but the record has no "
                    f"{self.description_key!r} (run the describe stage, or use text_source: action)"
                )
            text = description.strip()
        elif self.text_source == "raw_action":
            text = raw_action
        else:
            text = action
        frames = [input_path] + ([target_path] if load_targets and target_path else [])
        for frame in frames:
            if self.check_frames == "none":
                if not frame.is_file():
                    raise DataFormatError(f"{where}: frame not found: {frame}")
            elif self.check_frames == "decode":
                open_rgb(frame, where).close()
            else:
                with open_rgb(frame, where, decode=False) as image:
                    check_complete(image, frame, where)
        question, answer = curated.get(str(PurePosixPath(rec.fields["image_0"])), (None, None))
        return PreparedRecord(
            clip_id=rec.clip_id,
            action_id=rec.action_id,
            image_0=rec.fields["image_0"],
            image_1=image_1,
            input_path=input_path,
            target_path=target_path,
            action=action,
            raw_action=raw_action,
            text=text,
            description=description,
            curated=answer,
            question=question,
            where=where,
        )

    def _checked(
        self,
        split: str,
        load_targets: bool = True,
        features: FeatureReader | None = None,
        check_metadata: bool = False,
    ) -> list[PreparedRecord]:
        report = self.prepare_records(split, load_targets, features, check_metadata)
        if report.bad:
            if self.on_bad_record == "error":
                shown = "\n".join(f"  - {msg}" for _, msg in report.bad[:20])
                more = f"\n  ... and {len(report.bad) - 20} more" if len(report.bad) > 20 else ""
                raise DataFormatError(
                    f"{len(report.bad)} bad record(s) in {self.records_file(split)} "
                    f"({report.summary()}); set on_bad_record: skip to leave them out:\n"
                    f"{shown}{more}"
                )
            for sample_id, msg in report.bad:
                log.warning("Skipping %s: %s", sample_id, msg)
            log.warning("Skipped %d bad record(s) of %s/%s", len(report.bad), self.name, split)
        if not report.records:
            raise DataFormatError(f"{self.records_file(split)}: no usable records")
        return report.records

    def features_for(self, split: str) -> FeatureReader | None:
        """The VLM feature reader of ``split`` (``None`` when no features are configured).

        Raises:
            DataFormatError: If the features are missing or their dims are not the expected ones.
        """
        if self.feature_reader is not None or self.features is None:
            return self.feature_reader

        return open_features(
            self.features,
            split,
            layout=self.features_layout,
            text_root=self.features_text,
            embed_dim=self.vlm_dim,
            image_tokens=self.vlm_image_tokens,
        )

    def make_dataset(
        self, split: str, train: bool, require_targets: bool = True, scored: bool = False
    ) -> EgoGenDataset:
        """Validate ``split`` and build its dataset.

        Args:
            split: The split name.
            train: Training split (random flips apply).
            require_targets: Every record must have a readable target frame. Without it a
                target is loaded only where the record names one.
            scored: The split's frames are written and scored (validation, test): each clip
                must be in the metadata file when the dataset has one.

        Returns:
            The dataset.
        """
        reader = self.features_for(split)
        records = self._checked(split, require_targets, reader, check_metadata=scored)
        if self.curated_only and split == self.train_split:
            total = len(records)
            records = [r for r in records if r.curated]
            if not records:
                raise DataFormatError(
                    f"curated_only: none of the {total} records of {self.records_file(split)} has "
                    f"a curated answer in {self.curated_file or self.default_curated_file()}"
                )
            rank_zero_info(f"{self.name}/{split}: training on the {len(records)} of {total} "
                           "records that have a curated answer")
        return EgoGenDataset(
            records,
            resolution=self.resolution,
            flip_prob=self.flip_prob if train else 0.0,
            feature_reader=reader,
            seed=self.data_seed,
            input_images=self.input_images,
        )

    def _undescribed(self, dataset: EgoGenDataset, split: str) -> EgoGenDataset:
        """Leave out the samples the describe stage's cache already holds."""
        assert self.skip_described is not None
        done = set(scan_shards(self.skip_described / split, set_aside_damaged=True))
        if not done:
            return dataset
        total = len(dataset.records)
        dataset.records = [r for r in dataset.records if r.sample_id not in done]
        rank_zero_info(
            f"{self.skip_described / split}: {total - len(dataset.records)} of {total} samples "
            f"already described, describing the other {len(dataset.records)}"
        )
        return dataset

    def setup(self, stage: str) -> None:
        """Validate and build the datasets the stage needs.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        wanted: list[tuple[str, str]] = {
            "fit": [("train", self.train_split), ("val", self.val_split)],
            "validate": [("val", self.val_split)],
            "test": [("test", self.test_split)],
            "predict": [("predict", self.predict_split)],
        }[stage]
        for role, split in wanted:
            if role not in self.datasets:
                dataset = self.make_dataset(
                    split, train=role == "train", require_targets=role != "predict",
                    scored=role in ("val", "test"),
                )
                if role == "predict" and self.skip_described is not None:
                    dataset = self._undescribed(dataset, split)
                self.datasets[role] = dataset

    # ----------------------------------------------------------------------------- loaders
    def _dataset(self, role: str) -> EgoGenDataset:
        if role not in self.datasets:
            raise RuntimeError(f"setup() has not prepared the {role!r} dataset")
        return self.datasets[role]

    def _loader_options(self, role: str) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "collate_fn": EgoBatch.collate,
            "persistent_workers": self.num_workers > 0 and role == "train",
            "pin_memory": torch.cuda.is_available(),
        }

    def _loader(self, role: str, shuffle: bool) -> DataLoader[EgoSample]:
        return DataLoader(
            self._dataset(role),
            batch_size=self.batch_size,
            shuffle=shuffle,
            **self._loader_options(role),
        )

    def train_dataloader(self) -> DataLoader[EgoSample]:
        """Loader over the train split that resumes mid-epoch (:mod:`lego.data.sampling`).

        Epoch ``e`` visits this rank's slice of a permutation drawn from ``(data_seed, e)`` (the
        records' order without ``shuffle``); under DDP the sampler is already distributed, so
        Lightning keeps it. Where the epoch stands is saved in the checkpoint (by this
        DataModule, :meth:`state_dict`, and by Lightning's fit loop, as the loader is stateful),
        so a resumed run goes on with the next batch.
        """
        dataset = self._dataset("train")
        trainer = getattr(self, "trainer", None)
        ranks = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}

        def current_epoch() -> int:
            assert trainer is not None
            return int(trainer.current_epoch)

        sampler = ResumableSampler(
            dataset,
            shuffle=self.shuffle,
            seed=self.data_seed,
            num_replicas=int(ranks.get("num_replicas", 1)),
            rank=int(ranks.get("rank", 0)),
        )
        loader = ResumableDataLoader(
            dataset,
            sampler,
            batch_size=self.batch_size,
            epoch=current_epoch if trainer is not None else None,
            **self._loader_options("train"),
        )
        if self._train_position is not None:
            loader.load_state_dict(self._train_position)
            self._train_position = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """Where the training epoch stands: ``{"train_position": {"epoch", "batches"}}``.

        Lightning saves it in the checkpoint. Lightning also saves the stateful train loader's
        state with its fit loop, but restores that one only when the loader is made after the
        checkpoint is read, which a ``configure_optimizers`` asking for
        ``trainer.estimated_stepping_batches`` prevents (Lightning issue #20550); this copy is
        restored before the model is set up.
        """
        if self._train_loader is not None:
            return {"train_position": self._train_loader.state_dict()}
        if self._train_position is not None:
            return {"train_position": dict(self._train_position)}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the train loader after the saved position (see :meth:`state_dict`).

        Args:
            state_dict: What :meth:`state_dict` returned.
        """
        position = state_dict.get("train_position")
        if position is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(position)
        else:
            self._train_position = dict(position)

    def val_dataloader(self) -> DataLoader[EgoSample]:
        """Loader over the validation split."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader[EgoSample]:
        """Loader over the test split (``val`` in the paper)."""
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader[EgoSample]:
        """Loader over the predict split."""
        return self._loader("predict", False)

