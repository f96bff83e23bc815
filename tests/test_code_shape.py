"""The package stays readable: no function body (docstring and signature aside) over 60
lines, and the exporter's rooms keep their doors: the flatbuffer passes know no Keras."""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_lowprec")
LIMIT = 60


def _bodies():
    for folder, _, names in os.walk(ROOT):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            tree = ast.parse(open(path).read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = node.body
                    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                        body = body[1:]  # the docstring
                    yield os.path.relpath(path, ROOT), node.name, node.end_lineno - body[0].lineno + 1


def test_no_function_body_over_the_limit():
    long = [f"{path}:{name} ({n} lines)" for path, name, n in _bodies() if n > LIMIT]
    assert not long, "functions over %d lines: %s" % (LIMIT, ", ".join(long))


def test_the_limit_check_sees_the_package():
    found = {(path, name) for path, name, _ in _bodies()}
    assert ("export/pipeline.py", "run") in found and ("quantizers.py", "get") in found


def test_supported_layers_come_from_the_handler_registry():
    from keras_lowprec.export import handlers

    text = handlers.supported_layers()
    for handler in handlers._ORDER:
        assert handler.description in text
    assert {"LSTM", "Dense", "LayerNormalization", "Masking", "Dropout"} <= set(handlers._REGISTRY)


def test_docs_list_the_registered_layers():
    from keras_lowprec.export import handlers

    docs = os.path.join(os.path.dirname(ROOT), "docs", "export.md")
    assert "> " + handlers.supported_layers() + "\n" in open(docs).read()
