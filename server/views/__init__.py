"""HTTP views: they translate between JSON and services, nothing more."""
