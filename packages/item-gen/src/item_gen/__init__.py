"""item_gen."""
