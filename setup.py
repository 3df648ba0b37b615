"""Build of the optional compiled hot path; everything else is in pyproject.toml.

``kubescrape.scrape._fastpath`` is a small C extension (the warm loop of the scrape cache). It is
optional: without a C compiler or the Python headers the build skips it and the package runs the
pure-Python path, with the same output.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kubescrape.scrape._fastpath",
            sources=["kubescrape/scrape/_fastpath.c"],
            optional=True,
        )
    ]
)
