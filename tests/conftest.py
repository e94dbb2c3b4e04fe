import os
import random
import warnings

import pytest

os.environ.setdefault("NNI_FRAMEWORK", "none")
warnings.filterwarnings("ignore", category=RuntimeWarning)


@pytest.fixture
def rng():
    return random.Random(1234)
