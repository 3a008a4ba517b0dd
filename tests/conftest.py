"""Test configuration: Hypothesis explores new examples locally; in CI (``CI`` set) it uses a
fixed, derandomized set so a run is reproducible and its failures can be replayed."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
