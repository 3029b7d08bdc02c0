"""Features -> files: ARFF and CSV writers in the original tool's format."""
from .writers import FeatureWriter, arff_quote, open_writer

__all__ = ["FeatureWriter", "arff_quote", "open_writer"]
