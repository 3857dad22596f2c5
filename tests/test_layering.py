"""The layering of STYLE.md, checked on every module's imports so that it cannot silently rot.

cli, serve, tour -> recipes -> pipelines -> models, data, vectors, generation; recipes -> trainer -> callbacks,
checkpoint, schedules, metrics. Models are pure (torch, numpy, the standard library, lmlab.errors and other
models); data never imports models; nothing imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lmlab"

#: (importing package, imported package) pairs that are forbidden
FORBIDDEN = {
    "models": {"trainer", "config", "checkpoint", "callbacks", "data", "recipes", "cli", "serve", "pipelines",
               "vectors", "tour", "registry", "distributed", "schedules", "metrics", "plots"},
    "data": {"models", "recipes", "cli", "serve", "pipelines", "trainer", "tour"},
    "pipelines": {"recipes", "cli", "serve", "tour", "trainer"},
    "trainer": {"recipes", "cli", "serve", "pipelines", "tour", "models"},
    "callbacks": {"recipes", "cli", "serve", "pipelines", "tour", "models"},
    "checkpoint": {"recipes", "cli", "serve", "pipelines", "tour", "models", "trainer"},
    "generation": {"recipes", "cli", "serve", "pipelines", "tour", "trainer", "data"},
    "chat": {"recipes", "cli", "serve", "pipelines", "tour", "trainer", "models", "data"},
    "recipes": {"cli", "serve", "tour"},
    "serve": {"cli"},
    "tour": {"cli"},
}


def _top(module: str) -> str | None:
    """'lmlab.models.gpt' -> 'models'; a non-lmlab module -> None."""
    parts = module.split(".")
    if parts[0] != "lmlab":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every lmlab module that ``path`` imports (at any depth: lazy imports inside functions count too)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names if name == "lmlab"]
    return out


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


MODULES = sorted(p for p in SRC.rglob("*.py"))


def test_the_checker_sees_every_module():
    assert len(MODULES) > 40
    assert any(_layer(p) == "models" for p in MODULES) and any(_layer(p) == "recipes" for p in MODULES)


def test_the_checker_catches_a_forbidden_import(tmp_path):
    bad = SRC / "models" / "_layering_probe.py"
    try:
        bad.write_text("def f():\n    from lmlab.trainer import Trainer\n    from ..data import vocab\n")
        found = [m for _, m in _imports(bad) if _top(m) in FORBIDDEN["models"]]
        assert found == ["lmlab.trainer", "lmlab.data"]
    finally:
        bad.unlink()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layering(path):
    layer = _layer(path)
    forbidden = FORBIDDEN.get(layer, set())
    problems = [
        f"{path.relative_to(SRC.parent)}:{line} imports {module} ({layer} -> {_top(module)} is not allowed)"
        for line, module in _imports(path)
        if _top(module) in forbidden or (_top(module) == "cli" and layer not in ("cli", "__main__"))
    ]
    assert not problems, "\n".join(problems)
