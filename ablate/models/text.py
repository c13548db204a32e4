"""Text backbones (filled in by the text-classification work)."""
