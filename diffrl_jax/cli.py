"""What the command-line scripts in experiments/ share besides the library: the third-party
warnings they silence (each by its exact text and issuing module, nothing broader)."""

import warnings

__all__ = ["KNOWN_WARNINGS", "filter_known_warnings"]

# (message regex, category, issuing module regex): warnings that say nothing about the run.
KNOWN_WARNINGS = (
    # brax.io.mjcf.load, on every brax environment built: brax's pipelines are unmaintained
    # (ours run on its MJX pipeline by default; README says which backends are used)
    (r"Brax System, piplines and environments are not actively being maintained",
     UserWarning, r"brax\.io\.mjcf"),
)


def filter_known_warnings() -> None:
    """Silences KNOWN_WARNINGS (call at import in a command-line script)."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
