"""The build step pyproject.toml cannot say: a built `ciel` carries its models, shaders and patches.

A checkout keeps them at the repository's root (models/, shaders/, patches/), where
engine/configio.py's ROOT finds them; a wheel (`pip install .`) gets a copy in `ciel/_data/`,
where the same ROOT finds them once installed. An editable install (`pip install -e .`, what
`make` does) copies nothing: it reads the checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA = ("models", "shaders", "patches")


class BuildWithData(build_py):
    """build_py, then the data folders into the package's `_data`."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "ciel" / "_data"
        for name in DATA:
            shutil.copytree(HERE / name, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildWithData})
