# The local check gate and shortcuts. CI runs integration/test.sh, which runs
# the same checks after installing what they need.
.PHONY: check fmt clippy doc test demo bench

check: fmt clippy doc test

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

test:
	CONTAINERS_CONF=/etc/hostctl-test/containers.conf cargo test --all-targets

demo:
	integration/demo.sh

bench:
	integration/bench/run.sh
