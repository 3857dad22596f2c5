"""Build step for lmlab's compiled extensions, the word2vec, GloVe and bf16-weight kernels (Cython -> C, compiled at install time).

Everything else about the package is declared in pyproject.toml. Set ``LMLAB_PORTABLE=1`` to build without
``-march=native`` (for a wheel that runs on other CPUs of the same architecture).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# IEEE-relaxing flags that let the compiler vectorize the float32 dot products (reassociation) without
# -ffast-math itself, which on older GCC links crtfastmath.o and flushes denormals for the whole process
_GCC_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros",
              "-freciprocal-math"]


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/fp:fast"]
        else:
            flags = list(_GCC_FLAGS)
            if os.environ.get("LMLAB_PORTABLE", "0") != "1":
                flags.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = flags
        super().build_extensions()


setup(
    ext_modules=cythonize(
        [Extension(f"lmlab.models.{name}", [f"src/lmlab/models/{name}.pyx"])
         for name in ("_w2v_kernels", "_glove_kernels", "_bf16_kernels")],
        compiler_directives={"language_level": 3},
    ),
    cmdclass={"build_ext": BuildExt},
)
