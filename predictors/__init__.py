"""ofa-profile: predictors."""
