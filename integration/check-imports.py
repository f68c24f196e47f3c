#!/usr/bin/env python3
"""The import graph's house rule (docs/architecture.md, "Layers").

Reads every `crate::` path in src/ (in `use` lines, multi-line `use` groups
and paths written inline), maps each file to its top-level module (a folder
under src/ or a single file), and fails when a module imports one of a
higher layer or when the modules' graph has a cycle. Tests count too: a
test module that needs a higher layer belongs in integration/tests/.

Usage: integration/check-imports.py [SRC_DIR]   (default: src)
"""
import os
import re
import sys

# Lowest first. A module may import its own layer's modules (as long as no
# cycle forms) and any lower layer's, never a higher one's.
LAYERS = [
    ["util", "error", "digest", "fsutil", "imgref", "interrupt", "progress", "sysroot", "format"],
    ["host"],
    ["oci", "store"],
    ["trust"],
    ["pull", "boot", "fleet"],
    ["deploy", "apps"],
    ["install", "agent"],
    ["lint", "rechunk"],
    ["cli"],
    ["main", "lib"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}

CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)


def module_of(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def imports(text):
    found = set(CRATE_PATH.findall(text))
    for group in USE_GROUP.findall(text):
        found.update(re.findall(r"(?:^|[{,]\s*)([a-z_][a-z0-9_]*)", group))
    found.discard("self")
    return found


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    edges = {}
    problems = []
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            text = re.sub(r"//[^\n]*", "", open(path, encoding="utf-8").read())
            a = module_of(src, path)
            for b in imports(text):
                if b == a or b not in RANK and b not in edges:
                    if b != a and b not in RANK:
                        problems.append(f"{path}: crate::{b} is in no layer of {sys.argv[0]}")
                    continue
                edges.setdefault(a, {}).setdefault(b, set()).add(path)
    for a, targets in sorted(edges.items()):
        if a not in RANK:
            problems.append(f"module {a} is in no layer of {sys.argv[0]}")
            continue
        for b, paths in sorted(targets.items()):
            if RANK[b] > RANK[a]:
                problems.append(f"{a} (layer {RANK[a]}) imports {b} (layer {RANK[b]}): {', '.join(sorted(paths))}")
    # Cycles between modules (depth-first search over the module graph).
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, {})):
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                problems.append("cycle: " + " -> ".join(cycle))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    for p in problems:
        print(p)
    n = sum(len(t) for t in edges.values())
    print(f"{len(edges)} modules, {n} module-to-module imports, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
