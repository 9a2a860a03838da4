"""``python3 -m meshcert.sut.reference`` starts the reference SUT (see runtime.py)."""

import sys

from meshcert.sut.reference.runtime import main

sys.exit(main())
