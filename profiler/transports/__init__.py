"""ofa-profile: profiler/transports."""
