"""The demo store's small models: their recipes and how the demo registers them."""
