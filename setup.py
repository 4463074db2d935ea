"""Build the Cython extensions; everything else is declared in pyproject.toml."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("fleet._features", ["fleet/_features.pyx"], include_dirs=[numpy.get_include()]),
    Extension("bidder._offers", ["bidder/_offers.pyx"]),
    Extension("bidder._bounds", ["bidder/_bounds.pyx"]),
    Extension("bidder._scorer", ["bidder/_scorer.pyx"], include_dirs=[numpy.get_include()]),
    Extension("learner._ftrl", ["learner/_ftrl.pyx"]),
    Extension("fleet.http._framing", ["fleet/http/_framing.pyx"]),
    Extension("bidlogger._copy", ["bidlogger/_copy.pyx"]),
    Extension("fleet.http._wire", ["fleet/http/_wire.pyx"]),
    Extension("fleet.http._connection", ["fleet/http/_connection.pyx"]),
    Extension("tracker._notice", ["tracker/_notice.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
)
