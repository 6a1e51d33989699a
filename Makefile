# The two commands of the README. Everything they need is installed by scripts/setup.sh.
.PHONY: demo test build bench clean

demo:
	scripts/demo.sh

test:
	scripts/test.sh

build:
	cargo build --locked --workspace

bench:
	bench/run.sh

clean:
	cargo clean
	rm -rf .venv
