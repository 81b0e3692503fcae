"""Fine-tuning launcher (a later issue)."""
from ui import planned

planned("Fine-tuning GMIC on ILC",
        "This page will launch and compare GMIC fine-tuning runs: feature extraction versus "
        "full fine-tuning, learning-rate sweeps, a from-scratch baseline and preprocessing "
        "variants, on CPU or GPU, with live loss curves and the resulting models' AUC on "
        "test-ILC beside their parent's.")
