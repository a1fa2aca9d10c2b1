# Shortcuts; scripts/setup.sh is the source of truth.
.PHONY: install test quickstart test-fast lint
install:
	bash scripts/setup.sh install
test:
	bash scripts/setup.sh test
quickstart:
	bash scripts/setup.sh quickstart
test-fast:
	.venv/bin/python -m pytest -q -x
lint:
	.venv/bin/ruff check src tests
