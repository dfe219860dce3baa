# gorkheavy-lite: two commands do everything.
#   make lab    - set up this machine, bring the lab up, run site.yml on it and open the chat
#   make test   - set up everything the tests need and run the whole suite
# On real Proxmox: make site INVENTORY=inventory/mylab
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON    ?= python3.11
VENV      ?= $(CURDIR)/.venv
INVENTORY ?= inventory/example
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

STAMP := $(VENV)/.installed

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the project and its dev extra

.PHONY: system-deps
system-deps: ## install the Debian packages the tests need (when missing)
	scripts/system-deps.sh

.PHONY: lint
lint: venv ## ruff, mypy, yamllint, ansible-lint (production), syntax check
	ruff check app tests benchmarks scripts
	ruff format --check app tests benchmarks scripts
	mypy
	yamllint --strict .
	ansible-lint --profile production
	ansible-playbook --syntax-check -i $(INVENTORY) site.yml
	python scripts/gen_role_docs.py --check README.md

.PHONY: unit
unit: venv ## pytest: everything but the real-host scenarios
	scripts/pytest.sh -m "not hosts"

.PHONY: hosts
hosts: venv system-deps ## pytest tests on real systemd hosts (podman)
	scripts/pytest.sh -m hosts

.PHONY: molecule
molecule: venv system-deps ## molecule test for every scenario under molecule/
	scripts/molecule-all.sh

.PHONY: test-image
test-image: system-deps ## build the systemd test host image when its recipe changed (skipped when current)
	scripts/build-test-image.sh

.PHONY: test
# The lab's end-to-end test (pytest marker `lab`, tests/e2e) runs as a lane of its own beside pytest and the
# scenarios, from the start. With Ansible reaching the hosts through Mitogen (ansible.cfg) and the ensemble applying
# each set in one module run, a fresh clone's whole `make test` took 28.6 minutes on 2 cores (2026-12-02; 35 minutes
# with the plain linear strategy). `make test LAB_E2E=0` leaves it out; `make test-lab` runs it alone, then molecule
# scenario `default` (the same end to end on the same lab: only one lab can exist on a machine).
# The scenarios run next to pytest, two at a time, in this order: the longest first.
TEST_SCENARIOS := cluster_lifecycle cluster prepare ensemble provision
export PYTEST_MARKERS := not lab
export LAB_E2E ?= 1

# The image is built before the tests start, so that no two of them build it at once.
test: venv system-deps lint test-image ## the whole suite: lint, then pytest, the lab end to end and molecule (TEST_SCENARIOS) side by side, collection build
	scripts/test-parallel.sh $(TEST_SCENARIOS)
	$(MAKE) --no-print-directory collection

.PHONY: test-lab
test-lab: venv system-deps test-image ## the lab end to end: pytest -m lab (tests/e2e), then molecule scenario default
	scripts/pytest.sh -p no:xdist -m lab tests/e2e
	scripts/molecule-all.sh default

.PHONY: collection
collection: venv ## build the gorkheavy.lite collection tarball into build/
	@mkdir -p build
	ansible-galaxy collection build --force --output-path build .

.PHONY: docs
docs: venv ## regenerate the variables table in README.md from meta/argument_specs.yml
	python scripts/gen_role_docs.py --write README.md

.PHONY: site
site: venv ## run site.yml (all stages present) against INVENTORY
	scripts/site.sh $(INVENTORY)

# The lab (app/gorkheavy_lab/lab/README.md): the Proxmox VE stand-in as a local service whose VMs are systemd test
# hosts on the podman network gorkheavy-lab, site.yml with inventory/lab, then gorkheavy chat through kubectl exec.
LAB := PYTHONPATH=$(CURDIR)/app $(VENV)/bin/python -m gorkheavy_lab.lab

.PHONY: lab
lab: venv test-image ## bring the lab up (or converge it), run site.yml on it, open gorkheavy chat
	$(LAB) up
	$(LAB) chat

.PHONY: lab-chat
lab-chat: venv ## the chat again: kubectl exec -it -n gorkheavy deploy/orchestrator -- gorkheavy chat
	$(LAB) chat

.PHONY: lab-status
lab-status: venv ## what of the lab exists and runs
	$(LAB) status

.PHONY: lab-down
lab-down: venv ## remove everything the lab created, and nothing else
	$(LAB) down

.PHONY: clean
clean: ## remove build output (keeps .venv)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
