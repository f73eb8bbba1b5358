"""ofa-profile: profiler."""
