# voxline: every command a developer needs. All targets set up .venv first.
BASE_IMAGE ?=
.PHONY: setup viewer check test demo up bench protos clean images compose-test

setup:            ## create/update .venv with every service and tool
	bash scripts/setup.sh

viewer:           ## setup, plus the trace viewer (Arize Phoenix) for `voxline up --viewer`, editable
	bash scripts/setup.sh --viewer

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

images: setup     ## the stack's Docker images from a host-made wheelhouse (BASE_IMAGE=... picks the base)
	BASE_IMAGE="$(BASE_IMAGE)" bash scripts/images.sh

compose-test: setup  ## build and start the docker-compose stack, talk to it, crash STT, check, tear down
	BASE_IMAGE="$(BASE_IMAGE)" bash scripts/compose_test.sh

protos: setup     ## regenerate the Python stubs from protos/
	bash scripts/gen_protos.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
