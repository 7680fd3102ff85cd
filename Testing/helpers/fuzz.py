"""Settings of the property-based tests: bounded, and the same examples on every run (reproducible CI)."""

from hypothesis import HealthCheck, settings


def bounded(max_examples: int) -> settings:
    """``max_examples`` derandomized examples, no deadline, no example database written into the repository."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
