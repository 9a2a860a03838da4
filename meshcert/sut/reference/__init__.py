"""The reference SUT: the connectivity guide implemented faithfully (``runtime.py``).

``runtime.py`` is one self-contained, standard-library-only file: images copy it alone to
``/opt/sut/runtime.py``. Its deliberate faults (the mutant zoo) are selected with
``SUT_MUTANT=<name>``; ``MUTANTS`` lists them.
"""

from pathlib import Path

from meshcert.sut.reference.runtime import MUTANTS, Runtime, make_server

RUNTIME_PATH = Path(__file__).with_name("runtime.py")

__all__ = ["MUTANTS", "RUNTIME_PATH", "Runtime", "make_server"]
