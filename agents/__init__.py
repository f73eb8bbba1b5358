"""ofa-profile: agents."""
