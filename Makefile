# lego: the two commands of the README (`make demo`, `make test`) create the environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/synthego
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test test-all demo backbones bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision are pinned (2.14.1 / 0.29.1) in pyproject.toml, so pip never pulls a newer torch.
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install lego with its test extras

test: setup  ## the default test suite (CPU, offline)
	$(PY) -m pytest -q

test-all: setup  ## including slow tests
	$(PY) -m pytest -q -m ''

DEMO_STEPS ?= 2000
DEMO_VLM_EPOCHS ?= 2
DEMO_QUIET := --trainer.enable_progress_bar=false
demo: setup  ## built-in SynthEgo data + the paper's four stages on CPU with the shipped miniature backbones
	$(PY) -m lego synthego --out $(DATA) --train 2000 --val 200 --size 64 --seed 0 --grid outputs/demo/synthego_pairs.png
	# 1. visual instruction tuning of the shipped SynthEgo VLM (pretrained/synthego-vlm)
	$(PY) -m lego fit --config configs/synthego/instruct.yaml --trainer.max_epochs=$(DEMO_VLM_EPOCHS) \
		--trainer.logger.init_args.name=demo_instruct --trainer.logger.init_args.version=demo $(DEMO_QUIET)
	# 2. its descriptions and embeddings for both splits (a new VLM: the old cache would be refused)
	rm -rf features/synthego
	$(PY) -m lego predict --config configs/synthego/describe.yaml --data.init_args.predict_split=train $(DEMO_QUIET)
	$(PY) -m lego predict --config configs/synthego/describe.yaml --data.init_args.predict_split=val $(DEMO_QUIET)
	# 3. LEGO from the shipped text-to-image model, on the VLM's descriptions; 4. test
	# (a previous demo would leave its last.ckpt, and this run would write last-v1.ckpt, and its frames)
	rm -rf logs/demo_lego/demo logs/synthego_lego/frames
	$(PY) -m lego fit --config configs/synthego/lego.yaml --trainer.max_steps=$(DEMO_STEPS) \
		--trainer.logger.init_args.name=demo_lego --trainer.logger.init_args.version=demo $(DEMO_QUIET)
	$(PY) -m lego test --config configs/synthego/lego.yaml --ckpt_path logs/demo_lego/demo/checkpoints/last.ckpt \
		--trainer.logger.init_args.name=demo_lego --trainer.logger.init_args.version=demo_test
	@echo "Demo done: SynthEgo in $(DATA) (pairs grid: outputs/demo/synthego_pairs.png); the shipped VLM"
	@echo "tuned $(DEMO_VLM_EPOCHS) epoch(s) (logs/demo_instruct, checkpoints/synthego/instruct); its descriptions,"
	@echo "their accuracy (features/synthego/description_metrics_*.json) and embeddings in features/synthego;"
	@echo "LEGO trained $(DEMO_STEPS) steps from the shipped text-to-image model: logs/demo_lego (tensorboard"
	@echo "--logdir logs), generated val frames in logs/synthego_lego/frames, metrics in the table above."

backbones: setup  ## re-create the shipped SynthEgo backbones in pretrained/ from scratch (hours on 2 CPU cores)
	$(PY) -m lego backbones --out pretrained --force

bench: setup  ## speed / size benchmarks, written as JSON to benchmarks/results/
	@for b in benchmarks/*.py; do case "$$b" in benchmarks/common.py|benchmarks/synthego_quality.py) continue;; esac; echo "== $$b"; OMP_NUM_THREADS=1 $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check lego tests benchmarks

clean:
	rm -rf outputs logs
