#!/usr/bin/env python3
"""Module dependency check for mlkube's crates (docs/architecture.md, "Module layers").

For each crate named on the command line (default: server), reads every `.rs` file under its `src/`,
maps it to its top-level module (`src/api/runs.rs` -> `api`, `src/lib.rs` -> the crate root), and
collects the top-level modules it names through `crate::<module>` paths (in `use` statements and
anywhere in code). Prints the graph (`--graph` as Graphviz dot) and exits 1 when the graph between
top-level modules has a cycle, naming one cycle per strongly connected component.
"""
import argparse
import pathlib
import re
import sys

CRATE_PATH = re.compile(r"\bcrate::(?:\{\s*)?([a-z_][a-z0-9_]*)")
# `use crate::{a, b::c}` names several modules in one brace group.
BRACE_GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)
COMMENT = re.compile(r"//.*?$|/\*.*?\*/", re.S | re.M)


def top_module(src: pathlib.Path, path: pathlib.Path) -> str:
    rel = path.relative_to(src)
    if len(rel.parts) == 1:
        stem = rel.stem
        return "<root>" if stem in ("lib", "main") else stem
    return rel.parts[0]


def graph_of(crate_dir: pathlib.Path) -> dict[str, set[str]]:
    src = crate_dir / "src"
    modules = {top_module(src, p) for p in src.rglob("*.rs") if "bin" not in p.relative_to(src).parts[:1]}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for path in src.rglob("*.rs"):
        if path.relative_to(src).parts[0] == "bin":
            continue
        me = top_module(src, path)
        text = COMMENT.sub("", path.read_text())
        # Test modules may reach anywhere; only the shipped code's layering is checked.
        text = re.split(r"#\[cfg\(test\)\]", text, maxsplit=1)[0]
        names = set(CRATE_PATH.findall(text))
        for group in BRACE_GROUP.findall(text):
            for item in group.split(","):
                head = item.strip().split("::")[0].strip()
                if head:
                    names.add(head)
        for name in names:
            if name in modules and name != me and me != "<root>":
                edges[me].add(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components; returns those with more than one module."""
    index = {}
    low = {}
    stack: list[str] = []
    on_stack = set()
    out = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crates", nargs="*", default=["server"], help="crate directories")
    parser.add_argument("--graph", action="store_true", help="print the graph as Graphviz dot")
    args = parser.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    failed = False
    for crate in args.crates:
        edges = graph_of(root / crate)
        if args.graph:
            print(f'digraph "{crate}" {{')
            for a in sorted(edges):
                for b in sorted(edges[a]):
                    print(f'  "{a}" -> "{b}";')
            print("}")
        found = cycles(edges)
        for comp in found:
            failed = True
            print(f"{crate}: import cycle between modules: {' <-> '.join(comp)}", file=sys.stderr)
            for a in comp:
                inside = sorted(edges[a] & set(comp))
                print(f"    {a} uses {', '.join(inside)}", file=sys.stderr)
        if not found:
            print(f"{crate}: {len(edges)} modules, no import cycles")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
