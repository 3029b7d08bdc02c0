"""``python -m deep_spectrum_extractor`` runs ``extract_ds_features``."""
import sys

from .cli.extract_ds_features import main

if __name__ == "__main__":
    sys.exit(main())
