#!/usr/bin/env python3
"""Checks the layout rules of ARCHITECTURE.md that the compiler does not.

* No circle of imports between the files of a crate (daemon/src, ctl/src). An edge
  A -> B is a `use` of B's module in A, or a path through it (`crate::b::f()`,
  `super::f()`, `child::f()`), in A's code before its `#[cfg(test)]` module; a
  parent's `pub use` of its children's items is its public face, not an edge. A type
  whose `impl` is split over a parent and its child files is one unit: calls between
  them go through methods and are not imports, so they are not edges.
* No daemon source file over 600 lines of code (the lines before `#[cfg(test)]`).
* At most 14 entries at the top of daemon/src.

Prints what it checked; exits 1 if a rule is broken.
"""

import re
import sys
from pathlib import Path

MAX_CODE_LINES = 600
MAX_TOP_ENTRIES = 14
CRATES = [("daemon/src", "lib.rs"), ("ctl/src", "main.rs")]


def code_of(path):
    """The lines before the file's `#[cfg(test)]` module."""
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#[cfg(test)]"):
            return lines[:i]
    return lines


def module_files(src, root_file):
    """Maps each module path (a tuple of names) to its file, from the crate root down."""
    files = {(): src / root_file}
    todo = [()]
    while todo:
        module = todo.pop()
        path = files[module]
        if path.name in (root_file, "mod.rs"):
            base = path.parent
        else:
            base = path.parent / path.stem
        for line in code_of(path):
            m = re.match(r"\s*(?:pub(?:\([^)]*\))? )?mod (\w+);", line)
            if not m:
                continue
            name = m.group(1)
            for candidate in (base / f"{name}.rs", base / name / "mod.rs"):
                if candidate.exists():
                    files[module + (name,)] = candidate
                    todo.append(module + (name,))
                    break
    return files


def strip_comments(text):
    """Comments and string contents, in one pass so that each hides the other's marks."""
    token = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"', re.S)
    return token.sub(lambda m: '""' if m.group(0).startswith('"') else "", text)


def use_paths(tree):
    """Expands a use tree (`a::{b, c::{d, e}}`) into its paths."""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{" and depth == 0:
            prefix = tree[:i].rstrip(":").rstrip()
            inner = tree[i + 1 : tree.rindex("}")]
            parts, depth2, start = [], 0, 0
            for j, c in enumerate(inner):
                if c == "{":
                    depth2 += 1
                elif c == "}":
                    depth2 -= 1
                elif c == "," and depth2 == 0:
                    parts.append(inner[start:j])
                    start = j + 1
            parts.append(inner[start:])
            out = []
            for part in parts:
                if part.strip():
                    for sub in use_paths(part):
                        out.append(prefix + "::" + sub if prefix else sub)
            return out
    return [re.sub(r"\s+as\s+\w+$", "", tree)]


def resolve(module, segments, files):
    """The module a path names from inside `module`, or None when it leaves the crate."""
    if not segments:
        return None
    head, rest = segments[0], segments[1:]
    if head == "crate":
        at = ()
    elif head in ("super", "self"):
        at = module
        while segments and segments[0] in ("super", "self"):
            if segments[0] == "super":
                at = at[:-1]
            segments = segments[1:]
        rest = segments
        return deepest(at, rest, files)
    elif module + (head,) in files:
        at, rest = module, segments
    else:
        return None
    return deepest(at, rest, files)


def deepest(at, rest, files):
    for name in rest:
        if at + (name,) in files:
            at = at + (name,)
        else:
            break
    return at


def edges(files):
    graph = {}
    for module, path in files.items():
        text = strip_comments("\n".join(code_of(path)))
        targets = set()
        for m in re.finditer(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", text):
            for p in use_paths(m.group(2)):
                t = resolve(module, [s for s in p.split("::") if s], files)
                # A parent's `pub use` of its children's items is its public face,
                # not a use of them.
                facade = m.group(1) and t is not None and t[: len(module)] == module
                if t is not None and not facade:
                    targets.add(t)
        for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
            t = resolve(module, m.group(1).split("::"), files)
            if t is not None:
                targets.add(t)
        graph[module] = targets - {module}
    return graph


def cycles(graph):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    root = Path(__file__).resolve().parent.parent
    broken = []
    for src, root_file in CRATES:
        files = module_files(root / src, root_file)
        graph = edges(files)
        name = lambda m: str(files[m].relative_to(root))
        n_edges = sum(len(t) for t in graph.values())
        found = cycles(graph)
        print(f"layout: {src}: {len(files)} files, {n_edges} import edges, "
              f"{len(found)} circles of imports")
        for comp in found:
            inside = set(comp)
            arrows = sorted(f"{name(a)} -> {name(b)}" for a in comp for b in graph[a] if b in inside)
            broken.append(f"{src}: circle of imports: {'; '.join(arrows)}")
    daemon = root / "daemon/src"
    sources = sorted(daemon.rglob("*.rs"))
    long = [(p, len(code_of(p))) for p in sources if len(code_of(p)) > MAX_CODE_LINES]
    for path, n in long:
        broken.append(f"{path.relative_to(root)}: {n} lines of code (at most {MAX_CODE_LINES})")
    print(f"layout: daemon/src: {len(sources)} files, {len(long)} over {MAX_CODE_LINES} lines of code")
    top = sorted(p.name for p in daemon.iterdir())
    print(f"layout: daemon/src: {len(top)} top entries (at most {MAX_TOP_ENTRIES})")
    if len(top) > MAX_TOP_ENTRIES:
        broken.append(f"daemon/src: {len(top)} top entries: {' '.join(top)}")
    for b in broken:
        print(f"layout: {b}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
