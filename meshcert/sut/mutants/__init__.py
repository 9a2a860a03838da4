"""The mutant zoo: the reference SUT with one deliberate fault each.

The mutants live in the reference runtime itself (one small branch per fault, so the image is
the same file) and are selected with the environment variable ``SUT_MUTANT=<name>``.
"""

from meshcert.sut.reference.runtime import MUTANTS

__all__ = ["MUTANTS"]
