# The two commands of the README. Everything they need is installed by scripts/setup.sh.
.PHONY: demo test build bench image clean golden

demo:
	scripts/demo.sh

test:
	scripts/test.sh

build:
	cargo build --locked --workspace

bench:
	bench/run.sh

# Rewrites tests/golden/*.prom from the exporters as they are now (after `make test`
# built them); review the diff before committing. The suite itself never writes them.
golden:
	cargo build --locked --workspace --all-targets
	UPDATE_GOLDEN=1 HEADROOM_BIN_DIR="$(CURDIR)/target/debug" .venv/bin/pytest -q -p no:cacheprovider tests/test_golden.py

# The release images, built from source on the public base images as a release pipeline
# builds them (needs docker.io, gcr.io and crates.io): $(IMAGE):$(TAG) from the
# Dockerfile's default stage, with every exporter, and $(IMAGE)/<stage>:$(TAG) for
# each exporter's own stage. With podman (and scripts/containers.conf), or Docker:
# `make image CONTAINER_ENGINE=docker`. BINARIES=build is the Dockerfile's default,
# passed because podman before 4.4 does not follow a stage named by a default.
CONTAINER_ENGINE ?= podman
IMAGE ?= headroom
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
TAG ?= $(VERSION)
REVISION ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

image:
	@stages=$$(sed -n 's/^FROM runtime AS //p' Dockerfile); default=$$(echo "$$stages" | tail -n1); \
	for stage in $$stages; do \
	  if [ "$$stage" = "$$default" ]; then name="$(IMAGE):$(TAG)"; else name="$(IMAGE)/$$stage:$(TAG)"; fi; \
	  echo "== $$name (stage $$stage)"; \
	  CONTAINERS_CONF="$${CONTAINERS_CONF:-$(CURDIR)/scripts/containers.conf}" DOCKER_BUILDKIT=1 \
	    $(CONTAINER_ENGINE) build --target "$$stage" --build-arg BINARIES=build \
	      --build-arg VERSION="$(VERSION)" --build-arg REVISION="$(REVISION)" --tag "$$name" . || exit 1; \
	done

clean:
	cargo clean
	rm -rf .venv
