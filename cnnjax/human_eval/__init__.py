"""Human evaluation: a local web study of real-vs-generated judgments (HYPE-infinity)."""
