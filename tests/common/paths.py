"""Where meshcert's own tests find the checkout (the tests do not ship in the wheel)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
