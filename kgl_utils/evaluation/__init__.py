"""Metrics: image-level detection scores and saliency-map quality against ground-truth masks."""
