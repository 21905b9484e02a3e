"""`python -m keras_neuromod ...`: the `keras-neuromod` command (`keras_neuromod.cli`)."""

import sys

from keras_neuromod.cli import main

if __name__ == "__main__":
    sys.exit(main())
