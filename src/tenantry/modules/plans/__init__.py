"""Plans, trials, feature flags, limits and usage (README "Plans and trials")."""
