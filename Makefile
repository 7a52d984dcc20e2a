# lego: the two commands of the README (`make demo`, `make test`) create the environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/synthego
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test test-all demo bench lint clean

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
DEMO_VLM_EPOCHS ?= 1
demo: setup  ## built-in SynthEgo data + the main job on CPU with tiny models
	$(PY) -m lego synthego --out $(DATA) --train 2000 --val 200 --size 64 --seed 0 --grid outputs/demo/synthego_pairs.png
	$(PY) -m lego bootstrap
	$(PY) -m lego fit --config configs/synthego/instruct.yaml --trainer.max_epochs=$(DEMO_VLM_EPOCHS) \
		--trainer.logger.init_args.name=demo_instruct --trainer.logger.init_args.version=demo --trainer.enable_progress_bar=false
	$(PY) -m lego predict --config configs/synthego/describe.yaml --data.init_args.predict_split=train
	$(PY) -m lego predict --config configs/synthego/describe.yaml --data.init_args.predict_split=val
	# a previous demo would leave its last.ckpt (this run would write last-v1.ckpt) and its frames
	rm -rf logs/demo_lego/demo logs/synthego_lego/frames
	$(PY) -m lego fit --config configs/synthego/lego.yaml --trainer.max_steps=$(DEMO_STEPS) \
		--trainer.logger.init_args.name=demo_lego --trainer.logger.init_args.version=demo --trainer.enable_progress_bar=false
	$(PY) -m lego test --config configs/synthego/lego.yaml --ckpt_path logs/demo_lego/demo/checkpoints/last.ckpt \
		--trainer.logger.init_args.name=demo_lego --trainer.logger.init_args.version=demo_test
	@echo "Demo done: SynthEgo in $(DATA) (pairs grid: outputs/demo/synthego_pairs.png), miniature backbones in"
	@echo "pretrained/, VLM tuned $(DEMO_VLM_EPOCHS) epoch(s) (logs/demo_instruct, checkpoints/synthego/instruct), its"
	@echo "descriptions and embeddings in features/synthego, LEGO trained $(DEMO_STEPS) steps: logs/demo_lego"
	@echo "(tensorboard --logdir logs), generated val frames in logs/synthego_lego/frames, metrics in the table"
	@echo "above and logs/demo_lego/demo_test."

bench: setup  ## speed / size benchmarks, written as JSON to benchmarks/results/
	@for b in benchmarks/*.py; do case "$$b" in benchmarks/common.py|benchmarks/synthego_quality.py) continue;; esac; echo "== $$b"; OMP_NUM_THREADS=1 $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check lego tests benchmarks

clean:
	rm -rf outputs logs
