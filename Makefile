# lego: the two commands of the README (`make demo`, `make test`) create the environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
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

DEMO_STEPS ?= 1500
DEMO_VLM_EPOCHS ?= 6
demo: setup  ## built-in SynthEgo data + the paper's four stages on CPU with the shipped miniature backbones
	$(PY) -m lego demo --steps $(DEMO_STEPS) --vlm-epochs $(DEMO_VLM_EPOCHS)
	@echo "Demo done: SynthEgo in data/synthego (pairs grid: outputs/demo/synthego_pairs.png); the shipped VLM"
	@echo "tuned $(DEMO_VLM_EPOCHS) epoch(s) (logs/demo_instruct, checkpoints/synthego/instruct); its descriptions,"
	@echo "their accuracy (features/synthego/description_metrics_*.json) and embeddings in features/synthego;"
	@echo "LEGO trained $(DEMO_STEPS) steps from the shipped text-to-image model (logs/demo_lego; tensorboard"
	@echo "--logdir logs), then tested beside copy-input, SDEdit and ProxEdit: outputs/demo/table/table.md,"
	@echo "frames per method in outputs/demo/table/<method>/frames, side by side in outputs/demo/table/table.png;"
	@echo "LEGO's val pairs with the VLM's descriptions in outputs/demo/lego_val.png; times in outputs/demo/report.json."

backbones: setup  ## re-create the shipped SynthEgo backbones in pretrained/ from scratch (hours on 2 CPU cores)
	$(PY) -m lego backbones --out pretrained --force

bench: setup  ## speed / size benchmarks, written as JSON to benchmarks/results/
	@for b in benchmarks/*.py; do case "$$b" in benchmarks/common.py|benchmarks/synthego_quality.py) continue;; esac; echo "== $$b"; OMP_NUM_THREADS=1 $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check lego tests benchmarks

clean:
	rm -rf outputs logs
