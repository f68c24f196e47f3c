# The local check gate and shortcuts. CI runs integration/test.sh, which runs
# the same checks after installing what they need.
.PHONY: check fmt clippy msrv imports doc docs-site test demo bench

check: fmt clippy msrv imports doc docs-site test

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --all-targets -- -D warnings

# The crate's rust-version (Cargo.toml) with that toolchain when it is
# installed; otherwise clippy's incompatible_msrv lint against clippy.toml's
# msrv, which catches std APIs newer than it outside #[test] bodies only.
msrv:
	@if rustup run 1.86 cargo --version >/dev/null 2>&1; then \
		cargo +1.86 check --all-targets; \
	else \
		echo "msrv: no 1.86 toolchain installed; checking with clippy's incompatible_msrv lint (clippy.toml)"; \
		cargo clippy --all-targets -- -D clippy::incompatible_msrv; \
	fi

# No import from a lower layer to a higher one, no cycle (docs/architecture.md).
imports:
	integration/check-imports.py src

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# docs/ as an mdBook in target/book, every relative link and anchor checked.
docs-site:
	integration/check-docs.py

test:
	CONTAINERS_CONF=/etc/hostctl-test/containers.conf cargo test --all-targets

demo:
	integration/demo.sh

bench:
	integration/bench/run.sh
