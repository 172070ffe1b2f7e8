"""Write the API reference, docs/api/, from the docstrings of lt_keras's public modules, with pdoc.

pdoc (https://pdoc.dev, on PyPI) renders each module's docstrings and
signatures; it is a documentation tool, not a dependency of lt_keras:
``pip install pdoc`` in the environment first. Run after changing a public
docstring: ``bash tools/env.sh python tools/api_reference.py``.
"""
import os
import pathlib
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    try:
        import pdoc
    except ImportError:
        sys.exit("api_reference: pdoc is not installed; run `pip install pdoc` in this environment first.")
    sys.path.insert(0, REPO)
    import lt_keras

    out = pathlib.Path(argv[1] if len(argv) > 1 else os.path.join(REPO, "docs", "api"))
    # pdoc already documents the modules lt_keras.__all__ names (supermask) as part of the package.
    modules = ["lt_keras"] + [f"lt_keras.{name}" for name in lt_keras.PUBLIC_MODULES if name not in lt_keras.__all__]
    os.environ.setdefault("PDOC_ALLOW_EXEC", "1")  # TensorFlow's import runs `uname`, which pdoc blocks by default
    pdoc.render.configure(docformat="restructuredtext", show_source=False, search=False)
    if out.exists():
        shutil.rmtree(out)
    pdoc.pdoc(*modules, output_directory=out)
    print(f"API reference of {len(modules)} modules written to {os.path.relpath(out, REPO)}/ (open index.html)")


if __name__ == "__main__":
    main(sys.argv)
