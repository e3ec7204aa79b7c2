# voxline: every command a developer needs. All targets set up .venv first.
.PHONY: setup check test demo up bench protos clean

setup:            ## create/update .venv with every service and tool
	bash scripts/setup.sh

check: setup      ## ruff, mypy, generated-stub drift, docker-compose validation
	bash scripts/check.sh

test: check       ## checks, then the whole test suite
	.venv/bin/python -m pytest

demo: setup       ## start the four services on offline defaults and play a few turns through them
	.venv/bin/voxline demo

up: setup         ## run the stack locally until Ctrl-C
	.venv/bin/voxline up

bench: setup      ## the benchmark suite, quick mode
	.venv/bin/python -m bench --quick

protos: setup     ## regenerate the Python stubs from protos/
	bash scripts/gen_protos.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
