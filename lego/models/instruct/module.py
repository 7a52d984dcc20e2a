"""Visual instruction tuning of a LLaVA model, and the describe stage (descriptions + features)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import Tensor
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from lego.batch import EgoBatch, GeneratedDescriptions
from lego.data.features import FORMAT, FORMAT_VERSION, TEXT_LENGTH, DescribedSamples, tensor_sha256
from lego.data.io import DataFormatError
from lego.errors import ConfigError
from lego.models.instruct.network import (
    LANGUAGE_MODEL_LORA_TARGETS,
    LEGO_QUERY,
    LLAMA2_CONVERSATION,
    LLAVA_SYSTEM_PROMPT,
    PromptTemplate,
    TorchDtype,
    TrainingInputs,
    apply_lora,
    build_training_inputs,
    find_projector,
    fold_projector,
    freeze_vision_tower,
    generate_with_embeddings,
    inner_projector,
    load_vlm,
    prepare_full_finetuning,
    sample_seed,
    warmup_steps,
)
from lego.models.seeding import step_randomness

log = logging.getLogger(__name__)


class VisualInstructionTuning(LightningModule):
    """Tunes a transformers ``LlavaForConditionalGeneration`` to describe how an action is done.

    ``fit`` trains on (input frame, action) -> curated description pairs with the paper's
    LLaMA-2 chat template and query; only the answer and EOS tokens are supervised. ``predict``
    (the describe stage) generates the enriched description of each sample and returns its VLM
    image embedding (projector output) and text embedding (last-layer, post-norm hidden state of
    each generated token, first 77, zero-padded, with a mask), written by ``DescriptionWriter``.

    Images are preprocessed by the model's own processor from the original frame as stored
    (``image_source: file``: the DataModule decodes it in its loader, ``input_images``; the
    paper: shortest edge 224, centre crop, CLIP normalisation).
    ``image_source: batch`` uses the DataModule's squashed frames instead (faster, not faithful).

    Args:
        model_name_or_path: Hub id (e.g. ``llava-hf/llava-1.5-7b-hf``) or local directory of a
            transformers LLaVA model with its processor.
        adapter: A peft adapter directory to load on top (e.g. the one written by ``fit``).
        finetune: ``lora`` (peft LoRA on the language model) or ``full`` (the whole language
            model, as the paper). The vision tower is always frozen.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_target_modules: Regex of the adapted modules (language model only).
        train_projector: Train the multimodal projector fully (peft ``modules_to_save``).
        dtype: Weight dtype of the loaded model (use the trainer's ``precision`` for mixed
            precision).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        system_prompt: System prompt of the conversation.
        conversation: Rendering of the user turn (``{system}``, ``<image>``, ``{question}``).
        query: The question; ``{action}`` is the cleaned action label.
        use_chat_template: Render prompts with the processor's chat template instead.
        question_source: ``query`` (the query filled with the action) or ``curated`` (the human
            turn of the curated conversation, when present).
        image_source: ``file`` (the original frame through the processor) or ``batch``.
        max_length: Longest accepted sequence; longer samples are an error.
        max_action_chars: Longest accepted action label.
        learning_rate: Peak learning rate (paper: 2e-5 for full fine-tuning; LLaVA's LoRA recipe
            uses 2e-4).
        projector_learning_rate: Peak learning rate of the multimodal projector (``None``: the
            same as ``learning_rate``; LLaVA's LoRA recipe keeps the projector at 2e-5).
        weight_decay: AdamW weight decay (paper: 0).
        warmup_ratio: Fraction of the steps with a linear warmup (paper: 0.03).
        lr_schedule: After warmup: ``constant`` (what the paper's run effectively used) or
            ``cosine`` (what its script asked for).
        optimizer: Optimizer over the trainable parameters (default AdamW with the above).
        temperature: Sampling temperature of the describe stage (0: greedy).
        top_k: Top-k filter before sampling (transformers' default 50 applied in the paper).
        top_p: Nucleus filter before sampling (None: off).
        max_new_tokens: Most tokens per description (paper: 1024).
        seed: Base seed; each sample samples with its own seed derived from its id. Training
            draws (LoRA and attention dropout) come from ``(seed, global step, batch index,
            rank)`` (:func:`~lego.models.seeding.step_randomness`): a run resumed from a
            checkpoint ends with the weights of the uninterrupted run.
        val_generate_samples: Descriptions generated and logged at each validation.
        val_describe_batches: Validation batches whose samples are all described; the step
            returns them as :class:`~lego.batch.GeneratedDescriptions` (scored by
            ``DescriptionMetricsCallback``).
        val_max_new_tokens: Most tokens per logged validation description.
        image_storage: ``auto`` stores vision features before a linear projector (smaller cache,
            same embeddings); ``projected`` always stores the projector output.
        export_dir: At the end of ``fit``, write the peft adapter (``adapter/``), or the full
            model (``model/``) when fully fine-tuned, here.
        export_merged: Also write the adapter merged into the model (``merged/``).
        checkpoint_trainable_only: Lightning checkpoints hold only the trained parameters.
    """

    def __init__(
        self,
        model_name_or_path: str,
        adapter: Path | None = None,
        finetune: Literal["lora", "full"] = "lora",
        lora_r: int = 64,
        lora_alpha: int = 128,
        lora_dropout: float = 0.05,
        lora_target_modules: str = LANGUAGE_MODEL_LORA_TARGETS,
        train_projector: bool = True,
        dtype: TorchDtype = "float32",
        gradient_checkpointing: bool = False,
        system_prompt: str = LLAVA_SYSTEM_PROMPT,
        conversation: str = LLAMA2_CONVERSATION,
        query: str = LEGO_QUERY,
        use_chat_template: bool = False,
        question_source: Literal["query", "curated"] = "query",
        image_source: Literal["file", "batch"] = "file",
        max_length: int = 2048,
        max_action_chars: int = 1000,
        learning_rate: float = 2e-5,
        projector_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        optimizer: OptimizerCallable | None = None,
        temperature: float = 0.2,
        top_k: int | None = 50,
        top_p: float | None = None,
        max_new_tokens: int = 1024,
        seed: int = 42,
        val_generate_samples: int = 4,
        val_describe_batches: int = 0,
        val_max_new_tokens: int = 64,
        image_storage: Literal["auto", "projected"] = "auto",
        export_dir: Path | None = None,
        export_merged: bool = False,
        checkpoint_trainable_only: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if "{action}" not in query and question_source == "query":
            raise ValueError(f"query must contain '{{action}}', got {query!r}")
        self.template = PromptTemplate(
            system=system_prompt,
            conversation=conversation,
            query=query,
            use_chat_template=use_chat_template,
        )
        self.optimizer_factory = optimizer
        self.model: torch.nn.Module | None = None
        self.processor: Any = None
        self.strict_loading = not checkpoint_trainable_only

    # ----------------------------------------------------------------------------- building
    def configure_model(self) -> None:
        """Load the VLM with ``from_pretrained`` and set up LoRA / full fine-tuning."""
        if self.model is not None:
            return
        hp = self.hparams
        model, self.processor = load_vlm(hp.model_name_or_path, hp.dtype)
        if hp.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(hp.adapter), is_trainable=True)
            freeze_vision_tower(model)
        elif hp.finetune == "lora":
            model = apply_lora(
                model,
                r=hp.lora_r,
                alpha=hp.lora_alpha,
                dropout=hp.lora_dropout,
                target_modules=hp.lora_target_modules,
                train_projector=hp.train_projector,
            )
        else:
            prepare_full_finetuning(model, hp.train_projector)
        model.train()  # from_pretrained returns eval mode; the frozen tower stays in eval
        for name, module in model.named_modules():
            if name.endswith("vision_tower"):
                module.eval()
        if hp.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        self.model = model

    @property
    def llava(self) -> torch.nn.Module:
        """The built model (after ``configure_model``)."""
        if self.model is None:
            raise RuntimeError("configure_model() has not been called")
        return self.model

    # ----------------------------------------------------------------------------- inputs
    def _where(self, batch: EgoBatch, i: int) -> str:
        path = batch.input_paths[i] if batch.input_paths else ""
        return f"sample {batch.sample_ids[i]!r}" + (f" ({path})" if path else "")

    @property
    def reads_input_images(self) -> bool:
        """Whether batches must carry the input frames as stored (``image_source: file``).

        ``python -m lego`` passes it to the DataModule's ``input_images``.
        """
        return self.hparams.image_source == "file"

    def _images(self, batch: EgoBatch, indices: list[int]) -> list[Image.Image]:
        if self.hparams.image_source == "batch":
            frames = ((batch.input_frames[indices].float().cpu() + 1) * 127.5).round().clamp(0, 255)
            return [Image.fromarray(f.byte().permute(1, 2, 0).numpy()) for f in frames]
        if batch.input_images is None:
            raise ConfigError(
                "image_source is 'file' but the batch carries no input images: set the "
                "DataModule's input_images: true (python -m lego sets it from the model)"
            )
        return [batch.input_images[i] for i in indices]

    def _prompts(self, batch: EgoBatch, indices: list[int]) -> list[str]:
        prompts = []
        for i in indices:
            question = None
            if self.hparams.question_source == "curated" and batch.questions:
                question = batch.questions[i]
            if not question:
                question = self.template.question(
                    batch.actions[i], self._where(batch, i), self.hparams.max_action_chars
                )
            prompts.append(self.template.render(question, self.processor))
        return prompts

    def training_inputs(
        self, batch: EgoBatch, indices: list[int], answers: list[str]
    ) -> TrainingInputs:
        """Tokenize the selected samples with their answers (label-masked).

        Args:
            batch: The batch.
            indices: Samples of the batch to use.
            answers: One answer per selected sample.

        Returns:
            The model inputs on the module's device.
        """
        inputs = build_training_inputs(
            self.processor,
            self._images(batch, indices),
            self._prompts(batch, indices),
            answers,
            [self._where(batch, i) for i in indices],
            self.hparams.max_length,
        )
        dtype = next(p for p in self.llava.parameters() if p.is_floating_point()).dtype
        return TrainingInputs(
            input_ids=inputs.input_ids.to(self.device),
            attention_mask=inputs.attention_mask.to(self.device),
            labels=inputs.labels.to(self.device),
            pixel_values=inputs.pixel_values.to(self.device, dtype),
        )

    def _loss(self, inputs: TrainingInputs) -> Tensor:
        out = self.llava(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            pixel_values=inputs.pixel_values,
            labels=inputs.labels,
        )
        return out.loss

    # ----------------------------------------------------------------------------- steps
    def training_step(self, batch: EgoBatch, batch_idx: int) -> Tensor:
        """Supervised loss on the curated answers.

        Raises:
            DataFormatError: If a sample has no curated answer.
        """
        answers = []
        for i, answer in enumerate(batch.curated or [None] * len(batch)):
            if not answer or not answer.strip():
                raise DataFormatError(
                    f"{self._where(batch, i)}: no curated answer for instruction tuning (is the "
                    "sample's image_0 in the curated conversation file?)"
                )
            answers.append(answer)
        inputs = self.training_inputs(batch, list(range(len(batch))), answers)
        with step_randomness(
            self.hparams.seed, self.global_step, batch_idx, self.global_rank, self.device
        ):
            loss = self._loss(inputs)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(
        self, batch: EgoBatch, batch_idx: int
    ) -> GeneratedDescriptions | Tensor | None:
        """Loss on samples with a reference (curated, else description); generated descriptions.

        Returns:
            For the first ``val_describe_batches`` batches the descriptions of every sample
            (:class:`~lego.batch.GeneratedDescriptions`), else the loss.
        """
        refs: list[str | None] = []
        for i in range(len(batch)):
            curated = batch.curated[i] if batch.curated else None
            description = batch.descriptions[i] if batch.descriptions else None
            refs.append(curated or description)
        keep = [i for i, r in enumerate(refs) if r]
        loss = None
        if keep:
            inputs = self.training_inputs(batch, keep, [refs[i] for i in keep])  # type: ignore[misc]
            loss = self._loss(inputs)
            self.log("val/loss", loss, prog_bar=True, batch_size=len(keep), sync_dist=True)
        if self.trainer.sanity_checking:
            return loss
        hp = self.hparams
        describe_all = batch_idx < hp.val_describe_batches
        shown = hp.val_generate_samples if batch_idx == 0 else 0
        count = len(batch) if describe_all else min(len(batch), shown)
        if count == 0:
            return loss
        texts = self._generate(batch, list(range(count)), hp.val_max_new_tokens).texts
        if shown:
            self._log_descriptions(batch, refs, texts[:shown])
        if describe_all:
            return GeneratedDescriptions(sample_ids=list(batch.sample_ids), descriptions=texts)
        return loss

    @rank_zero_only
    def _log_descriptions(self, batch: EgoBatch, refs: list[str | None], texts: list[str]) -> None:
        rows = ["| sample | action | generated | reference |", "|---|---|---|---|"]
        for i, text in enumerate(texts):
            cells = [batch.sample_ids[i], batch.actions[i], text, refs[i] or ""]
            rows.append(
                "| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |"
            )
        table = "\n".join(rows)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/descriptions", table, self.global_step)
        log.info("validation descriptions at step %d:\n%s", self.global_step, table)

    def _generate(self, batch: EgoBatch, indices: list[int], max_new_tokens: int) -> Any:
        modes = [(m, m.training) for m in self.llava.modules()]
        self.llava.eval()
        try:
            return generate_with_embeddings(
                self.llava,
                self.processor,
                self._images(batch, indices),
                self._prompts(batch, indices),
                [sample_seed(self.hparams.seed, batch.sample_ids[i]) for i in indices],
                temperature=self.hparams.temperature,
                top_k=self.hparams.top_k,
                top_p=self.hparams.top_p,
                max_new_tokens=max_new_tokens,
                text_length=TEXT_LENGTH,
            )
        finally:
            for module, mode in modes:
                module.training = mode

    def predict_step(self, batch: EgoBatch, batch_idx: int) -> DescribedSamples:
        """Describe the batch's samples: text, image and text embeddings.

        A resumed describe run gets only the samples not described yet: the DataModule leaves
        out what the cache holds (``skip_described``).

        Returns:
            The outputs.
        """
        indices = list(range(len(batch)))
        result = self._generate(batch, indices, self.hparams.max_new_tokens)
        storage = self._image_storage()
        image = result.vision_features if storage == "vision" else result.image_embeddings
        return DescribedSamples(
            sample_ids=[batch.sample_ids[i] for i in indices],
            image_0=[batch.image_0[i] for i in indices],
            descriptions=result.texts,
            num_tokens=result.num_tokens,
            image=image.to(torch.float16).cpu(),
            text=result.text_embeddings.to(torch.float16).cpu(),
            text_mask=result.text_mask.cpu(),
            image_storage=storage,
        )

    # ----------------------------------------------------------------------------- describe
    def _image_storage(self) -> Literal["vision", "projected"]:
        if self.hparams.image_storage == "auto" and fold_projector(self.llava) is not None:
            return "vision"
        return "projected"

    def describe_plan(self) -> dict[str, Any]:
        """What this model's features are, for the describe writer's cache manifest.

        Returns:
            ``manifest`` (what produces the features: model, template, generation, dims) and
            ``projector`` (the folded projector when the cache stores vision features, else
            ``None``).
        """
        storage = self._image_storage()
        projector = fold_projector(self.llava) if storage == "vision" else None
        proj = inner_projector(self.llava)
        config = self.llava.config
        hp = self.hparams
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": {
                "name_or_path": str(hp.model_name_or_path),
                "adapter": str(hp.adapter) if hp.adapter is not None else None,
                "projector_sha256": tensor_sha256(*[p for p in proj.parameters()]),
            },
            "template": {**self.template.describe(), "question_source": hp.question_source},
            "generation": {
                "temperature": hp.temperature,
                "top_k": hp.top_k,
                "top_p": hp.top_p,
                "max_new_tokens": hp.max_new_tokens,
                "seed": hp.seed,
                "sampling": "Gumbel-max, noise = lowbias32 hash of (seed, step, token)",
                "image_source": hp.image_source,
            },
            "image_storage": storage,
            "dims": {
                "image_tokens": int(config.image_seq_length),
                "vision_dim": int(proj.linear_1.in_features),
                "embed_dim": int(config.text_config.hidden_size),
                "text_length": TEXT_LENGTH,
            },
            "dtype": "float16",
        }
        return {"manifest": manifest, "projector": projector}

    # ----------------------------------------------------------------------------- optim
    def configure_optimizers(self) -> Any:
        """Optimizer over the trainable parameters, linear warmup then constant or cosine."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("no trainable parameters")
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(params)
        else:
            optimizer = torch.optim.AdamW(
                self.parameter_groups(),
                lr=self.hparams.learning_rate,
                weight_decay=self.hparams.weight_decay,
                betas=(0.9, 0.999),
                eps=1e-8,
            )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = warmup_steps(total, self.hparams.warmup_ratio)
        if self.hparams.lr_schedule == "cosine":
            scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        else:
            scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters, the projector's in a group of its own learning rate.

        Returns:
            One group, or two (language model, projector) when ``projector_learning_rate`` is set.
        """
        trainable = [p for p in self.parameters() if p.requires_grad]
        lr = self.hparams.projector_learning_rate
        if lr is None:
            return [{"params": trainable}]
        projector = {id(p) for p in find_projector(self.model).parameters() if p.requires_grad}
        return [
            {"params": [p for p in trainable if id(p) not in projector]},
            {"params": [p for p in trainable if id(p) in projector], "lr": lr},
        ]

    # ----------------------------------------------------------------------------- saving
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trained parameters in the checkpoint (when configured)."""
        if not self.hparams.checkpoint_trainable_only:
            return
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }

    def on_fit_end(self) -> None:
        """Export the adapter / full model (and the merged model) to ``export_dir``."""
        if self.hparams.export_dir is not None and self.trainer.is_global_zero:
            self.export(Path(self.hparams.export_dir), merged=self.hparams.export_merged)

    def export(self, out_dir: Path, merged: bool = False) -> dict[str, Path]:
        """Write the tuned model in transformers / peft layout.

        Args:
            out_dir: Output folder; gets ``adapter/`` (LoRA) or ``model/`` (full fine-tuning),
                and ``merged/`` when asked.
            merged: Also write the LoRA adapter merged into the base model (a stock LLaVA
                directory with its processor). The module keeps working on the merged model.

        Returns:
            The folders written, by kind.
        """
        out_dir = Path(out_dir)
        written: dict[str, Path] = {}
        model = self.llava
        if hasattr(model, "peft_config"):
            model.save_pretrained(out_dir / "adapter")
            self.processor.save_pretrained(out_dir / "adapter")
            written["adapter"] = out_dir / "adapter"
            if merged:
                self.model = model.merge_and_unload()
                self.llava.save_pretrained(out_dir / "merged")
                self.processor.save_pretrained(out_dir / "merged")
                written["merged"] = out_dir / "merged"
        else:
            model.save_pretrained(out_dir / "model")
            self.processor.save_pretrained(out_dir / "model")
            written["model"] = out_dir / "model"
        log.info("exported %s", ", ".join(f"{k}: {v}" for k, v in written.items()))
        return written
